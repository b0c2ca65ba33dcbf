//! Keeps students' containers away from the agent's and controller's ports.
//!
//! mTLS already makes those ports useless without a cluster certificate;
//! this makes them unreachable too. A container reaches the host through
//! its bridge interface whatever host address it dials, so one INPUT rule
//! per port, matched on that interface, covers every address the host has.
//! Rules carry a comment naming this agent, are installed at start and
//! removed at shutdown.

use std::process::Command;

/// Comment on every rule, so operators (and cleanup) can find them.
const COMMENT_PREFIX: &str = "labssh-agent";

/// Installed rules; removed on drop.
pub struct Firewall {
    /// iptables argument lists after `-I`/`-D`, one per rule.
    rules: Vec<Vec<String>>,
}

fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Firewall {
    /// Rejects TCP from `bridge` (the containers' interface) to `ports`.
    /// Failure is logged, not fatal: mTLS still guards the ports.
    pub fn protect(agent: &str, bridge: &str, ports: &[u16]) -> Firewall {
        remove_stale(agent);
        let mut installed = Vec::new();
        for port in ports {
            let rule: Vec<String> = [
                "INPUT",
                "-i",
                bridge,
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-m",
                "comment",
                "--comment",
                &format!("{COMMENT_PREFIX} {agent}"),
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut insert = vec!["-I".to_string()];
            insert.extend(rule.iter().cloned());
            match iptables(&insert) {
                Ok(()) => {
                    tracing::info!(bridge, port, "containers cannot reach this port");
                    installed.push(rule);
                }
                Err(e) => tracing::warn!(
                    bridge,
                    port,
                    "could not firewall the port from containers (mTLS still guards it): {e}"
                ),
            }
        }
        Firewall { rules: installed }
    }
}

/// Removes rules an earlier run of this agent left behind (it was killed
/// before it could clean up), so they never accumulate.
fn remove_stale(agent: &str) {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "5", "-S", "INPUT"])
        .output()
    else {
        return;
    };
    let marker = format!("--comment \"{COMMENT_PREFIX} {agent}\"");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        if !line.contains(&marker) {
            continue;
        }
        // `iptables -S` quotes the comment; split it back into one argument.
        let (before, after) = rule.split_once(&marker).expect("marker is in the line");
        let mut args = vec!["-D".to_string()];
        args.extend(before.split_whitespace().map(str::to_string));
        args.push("--comment".into());
        args.push(format!("{COMMENT_PREFIX} {agent}"));
        args.extend(after.split_whitespace().map(str::to_string));
        match iptables(&args) {
            Ok(()) => tracing::info!("removed a firewall rule left by an earlier run: {line}"),
            Err(e) => tracing::warn!("could not remove stale firewall rule {line:?}: {e}"),
        }
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            let mut delete = vec!["-D".to_string()];
            delete.extend(rule);
            if let Err(e) = iptables(&delete) {
                tracing::warn!("could not remove firewall rule: {e}");
            }
        }
    }
}
