//! Helpers for labssh's integration tests: real Redis, real Docker, the
//! stock OpenSSH client and a real pseudo-terminal. Kept out of the
//! production crates so release builds never compile them.

pub mod docker;
pub mod docker_gate;
pub mod kube_api;
pub mod netns;
pub mod process;
pub mod pty;
pub mod redis_server;
pub mod slapd;
pub mod ssh;
pub mod ssh_agent;
pub mod telemetry;
pub mod webhook;
pub mod xvfb;

use std::sync::Once;

/// Logs from the code under test, shown for failing tests (`RUST_LOG` to tune).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,russh=warn,h2=warn,hyper=warn,tower=warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A short random suffix for names that must not collide between tests.
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::thread_rng().gen();
    format!("{prefix}{n:08x}")
}

/// Raises this process's open-file soft limit to its hard limit, for tests that
/// hold thousands of sockets (both ends, when the proxy runs in-process); returns
/// the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux, narrower on some other targets.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    soft
}

/// The pipes (`pipe:[INODE]`) among the open descriptors of process `pid` of this
/// host (`"self"` for the test itself), from `/proc/PID/fd`.
pub fn pipes_held_by(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|link| link.to_string_lossy().into_owned())
        .filter(|link| link.starts_with("pipe:"))
        .collect()
}
