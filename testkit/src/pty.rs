//! Running a program on a real pseudo-terminal, as a student's terminal
//! emulator would: a size, typed input, and resizes (SIGWINCH).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process whose controlling terminal is a pty we hold the master of.
pub struct PtyChild {
    /// Master side, for writing keystrokes and resizing.
    master: File,
    /// Everything the child wrote so far.
    output: Arc<Mutex<Vec<u8>>>,
    /// The process.
    child: Child,
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyChild {
    /// Spawns `cmd` on a new pty of `cols`×`rows`, in its own session.
    pub fn spawn(mut cmd: Command, cols: u16, rows: u16) -> anyhow::Result<PtyChild> {
        let (mut master_fd, mut slave_fd) = (0, 0);
        let ws = winsize(cols, rows);
        // SAFETY: openpty writes two fds into the given pointers; the name
        // and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        anyhow::ensure!(rc == 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just returned by openpty and are owned here.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone()?;
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child side is closed.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Ok(PtyChild {
            master,
            output,
            child,
        })
    }

    /// Types `text`.
    pub fn write(&mut self, text: &str) -> anyhow::Result<()> {
        self.master.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Resizes the terminal; the kernel sends SIGWINCH to the child.
    pub fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        anyhow::ensure!(rc == 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Output so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle`; returns the output.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if out.contains(needle) {
                return Ok(out);
            }
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {needle:?}; output so far: {out:?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the child to exit (bounded), killing it on timeout.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                anyhow::bail!(
                    "child did not exit within {timeout:?}; output: {:?}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
