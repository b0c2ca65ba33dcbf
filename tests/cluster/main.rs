//! The cluster as operators run it: every role a separate `labssh` process, with real
//! HAProxy, Redis and iptables. One test binary, one module per area:
//!
//! - `scale_out`: replicas behind HAProxy, agent and controller faults, draining;
//! - `isolation`: containers reach neither the agent's nor the controller's ports;
//! - `network`: containers on networks of their own: not each other, not link-local,
//!   egress policies, moving old containers, the rules kept and removed;
//! - `mtls`: the whole path over mutual TLS, and what is refused;
//! - `deploy_configs`: the example configurations and systemd units load;
//! - `deploy_web`: the web front door's Kubernetes objects, Secrets and compose
//!   replicas against its config, and `labssh web` started from them;
//! - `brute_force`: a thousand wrong passwords from one address, while others log in;
//! - `reattach`: sessions survive a killed and restarted agent (counter, exit status,
//!   fifty at once, a grace that runs out);
//! - `preauth`: limits before login (idle floods, unauthenticated caps, failed attempts
//!   per connection, keepalives).

#[path = "../lab/mod.rs"]
mod lab;

mod brute_force;
mod deploy_configs;
mod deploy_web;
mod isolation;
mod mtls;
mod network;
mod preauth;
mod reattach;
mod scale_out;

/// `labssh ROLE --config CONFIG`, logging at info: one role of the fleet.
fn labssh(role: &str, config: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"));
    cmd.arg(role).arg("--config").arg(config);
    cmd.env("RUST_LOG", "info");
    cmd
}
