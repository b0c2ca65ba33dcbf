//! Reading the helper's answers: one frame at a time, and a frame that comes with
//! descriptors (a connection or a listener made inside the container, a process's
//! pipes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::{Buf, BytesMut};
use labssh_helper_proto::wire;
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Reads the single frame of a CONNECT answer and the descriptor sent with it (any
/// more are closed).
pub(crate) async fn read_frame_with_fd(
    stream: &UnixStream,
) -> io::Result<(u8, Vec<u8>, Option<OwnedFd>)> {
    let mut buf = BytesMut::new();
    let (kind, payload, fds) = read_frame_with_fds(stream, &mut buf).await?;
    Ok((kind, payload, fds.into_iter().next()))
}

/// Reads one frame and every descriptor that came with the bytes read, in order,
/// keeping bytes past the frame in `buf` (the frames that follow it).
pub(crate) async fn read_frame_with_fds(
    stream: &UnixStream,
    buf: &mut BytesMut,
) -> io::Result<(u8, Vec<u8>, Vec<OwnedFd>)> {
    let mut fds = Vec::new();
    loop {
        if let Some((kind, payload, used)) = wire::split_frame(buf).map_err(io::Error::other)? {
            let frame = (kind, payload.to_vec(), fds);
            buf.advance(used);
            return Ok(frame);
        }
        stream.readable().await?;
        let mut chunk = [0u8; 4096];
        let read = stream.try_io(Interest::READABLE, || {
            recv_with_fds(stream.as_raw_fd(), &mut chunk, &mut fds)
        });
        match read {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the helper closed the connection",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Most descriptors kept from one frame's bytes; any beyond are closed.
const MAX_FDS: usize = 4;

/// One `recvmsg`, adding any descriptors passed with the bytes (close-on-exec) to
/// `fds`, at most [`MAX_FDS`] in all.
fn recv_with_fds(sock: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 keeps the control buffer aligned for cmsghdr; room for a few descriptors.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; iov and control outlive the call and their lengths
    // are given; the kernel writes at most msg_controllen bytes of control data.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize))
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // Owned at once, so any beyond the limit are closed on drop.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fds.len() < MAX_FDS {
                        fds.push(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok(n as usize)
    }
}
