//! Reading the helper's answers: one frame at a time, and the single frame that comes
//! with a descriptor (a connection or a listener made inside the container).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::{Buf, BytesMut};
use labssh_helper_proto::wire;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

/// Reads one frame, keeping bytes past it in `buf`.
pub(crate) async fn read_frame(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
) -> io::Result<(u8, Vec<u8>)> {
    loop {
        let split = wire::split_frame(buf).map_err(io::Error::other)?;
        if let Some((kind, payload, used)) = split {
            let frame = (kind, payload.to_vec());
            buf.advance(used);
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the helper closed the connection",
            ));
        }
    }
}

/// Reads the single frame of a CONNECT answer and the descriptor sent with it.
pub(crate) async fn read_frame_with_fd(
    stream: &UnixStream,
) -> io::Result<(u8, Vec<u8>, Option<OwnedFd>)> {
    let mut buf = Vec::new();
    let mut fd = None;
    loop {
        if let Some((kind, payload, _)) = wire::split_frame(&buf).map_err(io::Error::other)? {
            return Ok((kind, payload.to_vec(), fd));
        }
        stream.readable().await?;
        let mut chunk = [0u8; 4096];
        let read = stream.try_io(Interest::READABLE, || {
            recv_with_fd(stream.as_raw_fd(), &mut chunk)
        });
        match read {
            Ok((0, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the helper closed the connection",
                ))
            }
            Ok((n, got)) => {
                buf.extend_from_slice(&chunk[..n]);
                if got.is_some() {
                    fd = got;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmsg`, taking any descriptor passed with the bytes (close-on-exec).
fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
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
        let mut fd = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize))
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // The first is the connection; any others are closed on drop.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, fd))
    }
}
