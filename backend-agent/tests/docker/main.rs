//! The agent against the real Docker engine, in one test binary, one module per area:
//!
//! - `create_path`: a new container's home and passwd files set up before it exists,
//!   a vanished network made again;
//! - `docker_backend`: containers (names, labels, limits, homes, inventory) and
//!   processes on both spawn paths;
//! - `helper`: labssh-init as PID 1 — its socket, its peer checks, restoring it,
//!   identities and capabilities, the older container layout;
//! - `isolation`: rlimits, seccomp, a read-only root, /dev/shm, course data, GPUs;
//! - `netops`: connecting, resolving and listening inside containers;
//! - `network`: containers' networks, one per egress policy, and moving onto them;
//! - `sftp`: the built-in SFTP server in every container;
//! - `grpc_session`: the whole agent (`run`) with a fake controller, over gRPC;
//! - `hooks`: lifecycle hooks through the whole agent (commands, webhooks, timers);
//! - `lifecycle`: pausing, stopping and waking containers, their CPU time, the
//!   keep-alive file, recreating old and outdated ones;
//! - `reattach`: kept sessions outlive their connection and resume exactly, by their
//!   id in their container only, until their grace runs out;
//! - `warm_login`: a login into a running container asks Docker nothing (counted by
//!   `counting_proxy`), and the agent's knowledge follows Docker's events.

#[macro_use]
mod support;

mod counting_proxy;
mod create_path;
mod docker_backend;
mod grpc_session;
mod helper;
mod hooks;
mod isolation;
mod lifecycle;
mod listeners;
mod netops;
mod network;
mod reattach;
mod sftp;
mod warm_login;
