//! labssh-sftp: an SFTP server (protocol version 3, as OpenSSH clients speak it) on
//! stdin/stdout.
//!
//! The agent mounts this static binary read-only into every container it creates
//! (`/.labssh/sftp-server`) and starts it, as the student and in the student's home,
//! for `sftp` and modern `scp` when the image has no OpenSSH `sftp-server` of its own.
//! It works on the real filesystem as the calling process: no chroot, the container
//! is the boundary. See `handler.rs` for the requests it serves.

mod handler;
mod listing;
mod stdio;

use std::process::ExitCode;

const USAGE: &str = "usage: labssh-sftp\n\
    Serves SFTP (version 3) on stdin/stdout as the calling user, paths relative to \
    the current directory.";

fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        return match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
            "-V" | "--version" => {
                println!("labssh-sftp {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            other => {
                eprintln!("labssh-sftp: unexpected argument {other:?}\n{USAGE}");
                ExitCode::from(2)
            }
        };
    }
    keep_heap();
    // One client, strictly request after request: a single thread is all it needs.
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("labssh-sftp: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (done, finished) = tokio::sync::oneshot::channel();
        // russh-sftp serves on a task of its own and drops the handler when the stream
        // ends; the handler holds `done`, so `finished` resolves then.
        russh_sftp::server::run(stdio::stdio(), handler::Fs::new(done)).await;
        let _ = finished.await;
    });
    ExitCode::SUCCESS
}

/// Every read and write moves a buffer of up to 256 KiB through malloc. By default
/// glibc gives the heap top back to the kernel after each, so each request faults
/// fresh zeroed pages in again; on 1 GiB uploads that cost more system time than the
/// writes themselves. Keep freed memory (a few MiB at most) for reuse instead.
fn keep_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
