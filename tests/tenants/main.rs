//! The cross-tenant attack suite: as student alice, every way into student bob's
//! container, each of which must fail with nothing of bob's leaked. Bob plants a
//! secret in his home and serves it on a port ([`Bob::plant`]); every attack looks for
//! that secret in what alice gets back.
//!
//! - `network`: straight from alice's containers to bob's, by address, IPv6 and name;
//! - `names`: crafted login names (`bob`, `BOB`, `alice+../bob`, look-alikes, over-long);
//! - `agent_forwarding`: alice's forwarded agent socket, out of bob's reach by any path;
//! - `x11`: alice's forwarded X11 display, out of bob's reach by loopback and address,
//!   and bob's X clients open on his own screen only;
//! - `forwarding`: `ssh -L`/`-D` to bob by address, IPv6, name, `0.0.0.0`, and a name
//!   alice points at bob's address herself (DNS rebinding); `ssh -L PORT:/PATH` to
//!   bob's unix socket by his path, `/proc/PID/root`, `..` and labssh's own socket;
//! - `files`: SFTP paths (`/proc/1/root`, symlinks planted in alice's home pointing at
//!   host paths and at bob's volume), and a search of every file alice can read;
//! - `inside`: the helper socket and its directory, `/run/labssh`, the Docker socket,
//!   other containers' processes in `/proc`;
//! - `exhaustion`: alice's fork bomb and memory hog do not keep bob out;
//! - `certificates`: alice's OpenSSH user certificate opens only her account, by
//!   every login name; a rogue CA's certificate for bob opens nothing;
//! - `directory`: a directory student's password or key opens no login of another's,
//!   whether slapd answers or only the credential cache does;
//! - `groups`: bob's container of an environment restricted to his class stays closed
//!   to alice by every name and address; with `uid = "ldap"` each runs as their own
//!   uid by any login name, and neither reads the other's home;
//! - `hooks`: lifecycle hooks run in their own student's container with her variables,
//!   print to nobody, and alice's logins stuck in a slow hook do not hold bob's up;
//! - `isolation`: shared course data alice cannot write for bob, devices not listed;
//! - `lifecycle`: alice's keep-alive and sessions keep only her container awake; her
//!   keep-alive is never read through a symlink;
//! - `reattach`: bob's session id named under alice's login resumes nothing and
//!   leaves bob's kept session running and attached;
//! - `prestart`: prestarting alice's class leaves bob alone; no student can prestart;
//! - `passwd`: each new container's passwd and group files are its own student's,
//!   bound read-only; neither sees the other's entry;
//! - `self_service`: alice's `ssh alice+@lab reset|stop|start` acts on her own
//!   containers only, by any argument or login name, and lists nothing of bob's;
//! - `services`: bob's server is in the registry but in none of alice's listings;
//! - `start_queue`: alice's parallel logins take one place per container; bob's place
//!   counts only containers ahead of him and names nobody;
//! - `web`: alice's browser, logged in, reaches none of bob's services through the
//!   HTTPS front door by path, host or friendly name, nor with a cookie naming him;
//! - `watch`: an operator watching alice's terminal sees nothing of bob's, and bob
//!   is neither told nor shown anything of hers.
//!
//! Every new feature that opens a path between containers adds its case here.

#[path = "../lab/mod.rs"]
mod lab;

#[path = "../certs/ca.rs"]
mod ca;

mod agent_forwarding;
mod certificates;
mod directory;
mod exhaustion;
mod files;
mod forwarding;
mod groups;
mod hooks;
mod inside;
mod isolation;
mod lifecycle;
mod names;
mod network;
mod passwd;
mod pipes;
mod prestart;
mod reattach;
mod self_service;
mod services;
mod start_queue;
mod watch;
mod web;
mod x11;

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};
use tokio::process::Child;

use crate::lab::Lab;

/// The port bob's container serves his secret on.
const BOB_PORT: u16 = 7779;

/// Bob's side of every attack: a secret in his home, served on [`BOB_PORT`].
struct Bob {
    /// What must never reach alice.
    secret: String,
    /// His container's IPv4 address.
    ip: String,
    /// His container's IPv6 addresses (link-local ones included), if any.
    ipv6: Vec<String>,
    /// The session holding his server up.
    _server: Child,
}

impl Bob {
    /// Logs bob in, writes the secret to `~/secret` and serves it on [`BOB_PORT`];
    /// returns once it is served (checked from inside his own container, so a refusal
    /// seen by alice means the path is closed, not that nothing listened).
    async fn plant(lab: &Lab) -> Bob {
        let secret = format!("bob-secret-{}", labssh_testkit::unique("s"));
        let script = format!(
            "echo {secret} > ~/secret; chmod 600 ~/secret; {}",
            serve_file("~/secret", BOB_PORT)
        );
        let server = lab
            .ssh
            .command("bob", &Lab::bob(), &[&script])
            .spawn()
            .expect("spawn bob's session");
        lab.wait_listening("bob", "default", BOB_PORT).await;
        let name = lab.container_name("bob", "default");
        let own = labssh_testkit::docker::docker(&[
            "exec",
            &name,
            "sh",
            "-c",
            &format!("nc 127.0.0.1 {BOB_PORT} < /dev/null"),
        ])
        .unwrap_or_default();
        assert_eq!(own.trim(), secret, "bob's own container reads his server");
        let ip = inspect(
            &name,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        );
        assert!(!ip.is_empty(), "bob's container has an address");
        let ipv6 = labssh_testkit::docker::docker(&["exec", &name, "cat", "/proc/net/if_inet6"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 6 && f[5] != "lo").then(|| ipv6_text(f[0]))
            })
            .collect();
        Bob {
            secret,
            ip,
            ipv6,
            _server: server,
        }
    }

    /// Panics if `text` holds bob's secret.
    fn assert_not_in(&self, text: &str, what: &str) {
        assert!(
            !text.contains(&self.secret),
            "alice got bob's secret through {what}: {text:?}"
        );
    }
}

/// A shell command serving `file` to every connection on `port`, one busybox `nc` per
/// connection (`-ll`), so no connection ever finds the port closed between two.
fn serve_file(file: &str, port: u16) -> String {
    format!(
        "printf '#!/bin/sh\\nexec cat {file}\\n' > ~/.serve-{port}; chmod +x ~/.serve-{port}; \
         exec nc -ll -p {port} -e ~/.serve-{port}"
    )
}

/// `docker inspect -f FORMAT name`, trimmed.
fn inspect(name: &str, format: &str) -> String {
    labssh_testkit::docker::docker(&["inspect", "-f", format, name])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// An address of /proc/net/if_inet6 (32 hex digits) in the usual notation.
fn ipv6_text(hex: &str) -> String {
    let groups: Vec<u16> = (0..8)
        .map(|i| u16::from_str_radix(&hex[i * 4..i * 4 + 4], 16).unwrap_or(0))
        .collect();
    let mut octets = [0u16; 8];
    octets.copy_from_slice(&groups);
    std::net::Ipv6Addr::from(octets).to_string()
}

/// Runs `command` as alice (in `login`, e.g. `alice+admin`) and returns stdout and
/// stderr together, after checking the session ran at all (so an empty answer means
/// the attack found nothing, not that alice never got in).
async fn as_alice(lab: &Lab, login: &str, command: &str) -> String {
    let out = lab
        .ssh
        .run(
            login,
            &Lab::alice(),
            &[&format!("{command}; echo alice-done")],
        )
        .await
        .expect("ssh runs");
    // The gateway's own lines (its container being started) come first on stderr;
    // they are not the container's.
    let err = stderr(&out);
    let container_err: String = err
        .split_inclusive('\n')
        .skip_while(|l| l.starts_with("labssh: "))
        .collect();
    let text = format!("{}{container_err}", stdout(&out));
    assert!(
        stdout(&out).ends_with("alice-done\n"),
        "{login}'s session did not run `{command}`: {text}"
    );
    text
}

/// Polls `check` every 200 ms until it returns true; panics after `limit` with `what`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
