//! stdin/stdout as one stream for russh-sftp.
//!
//! The server answers one request after another on a single-threaded runtime with no
//! other task, so the descriptors are read and written with plain blocking system
//! calls. Tokio's own stdin/stdout hand every call to a thread pool: measured on 1 GiB
//! transfers that doubled the time of an upload, and it gains nothing here.
//!
//! russh-sftp's loop only stops at end of input; after any other error (a client that
//! went away mid-reply: EPIPE on stdout) it would try again forever. Here every error
//! is reported once and the stream then reads as ended, so the server exits.

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufReader, Join, ReadBuf};

/// Enough for a whole request of the largest size clients send (256 KiB) plus the
/// next request's header, so a request rarely takes more than one read.
const READ_BUFFER: usize = 512 * 1024;

/// stdin (buffered) and stdout.
pub fn stdio() -> Stdio {
    Stdio {
        inner: tokio::io::join(
            BufReader::with_capacity(READ_BUFFER, Fd(libc::STDIN_FILENO)),
            Fd(libc::STDOUT_FILENO),
        ),
        broken: false,
    }
}

/// See the module documentation.
pub struct Stdio {
    inner: Join<BufReader<Fd>, Fd>,
    broken: bool,
}

impl Stdio {
    fn check<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &result {
            self.broken = true;
        }
        result
    }
}

impl AsyncRead for Stdio {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Ok(())); // end of input
        }
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.check(result)
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A descriptor used with blocking calls; always ready.
struct Fd(RawFd);

impl Fd {
    /// Runs `call` until it is not interrupted; a descriptor left non-blocking by
    /// whoever started us is waited on with poll(2).
    fn blocking(
        &self,
        events: libc::c_short,
        mut call: impl FnMut() -> isize,
    ) -> io::Result<usize> {
        loop {
            let n = call();
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.0,
                        events,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd. Errors (EINTR) just lead to a retry.
                    unsafe { libc::poll(&mut pfd, 1, -1) };
                }
                _ => return Err(e),
            }
        }
    }
}

impl AsyncRead for Fd {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let space = buf.initialize_unfilled();
        let (ptr, len) = (space.as_mut_ptr(), space.len());
        // SAFETY: `ptr` points to `len` initialised bytes we may write.
        let n = self.blocking(libc::POLLIN, || unsafe {
            libc::read(self.0, ptr.cast(), len)
        });
        Poll::Ready(n.map(|n| buf.advance(n)))
    }
}

impl AsyncWrite for Fd {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // SAFETY: `buf` is valid for reads of its length.
        Poll::Ready(self.blocking(libc::POLLOUT, || unsafe {
            libc::write(self.0, buf.as_ptr().cast(), buf.len())
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_ends_the_input() {
        let mut stream = stdio();
        let failed: Poll<io::Result<usize>> = Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        assert!(matches!(stream.check(failed), Poll::Ready(Err(_))));
        let mut space = [0u8; 4];
        let mut buf = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let read = Pin::new(&mut stream).poll_read(&mut cx, &mut buf);
        assert!(matches!(read, Poll::Ready(Ok(()))));
        assert!(buf.filled().is_empty(), "reads as end of input");
    }

    #[test]
    fn a_pipe_round_trips() {
        let mut fds = [0; 2];
        // SAFETY: room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (reader, writer) = (Fd(fds[0]), Fd(fds[1]));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut writer = writer;
        let wrote = Pin::new(&mut writer).poll_write(&mut cx, b"hello");
        assert!(matches!(wrote, Poll::Ready(Ok(5))));
        let mut reader = reader;
        let mut space = [0u8; 16];
        let mut buf = ReadBuf::new(&mut space);
        let read = Pin::new(&mut reader).poll_read(&mut cx, &mut buf);
        assert!(matches!(read, Poll::Ready(Ok(()))));
        assert_eq!(buf.filled(), b"hello");
        // SAFETY: closing the descriptors the test opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
