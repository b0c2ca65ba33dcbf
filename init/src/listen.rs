//! LISTEN: a TCP socket listening inside the container's network namespace (for
//! `ssh -R`), handed to the agent as a descriptor; the agent accepts on it itself.
//!
//! Binding does not block, but it runs in a forked worker like CONNECT so that every
//! request that hands over a descriptor takes the same, already proven way.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::connect;
use crate::sys;
use labssh_helper_proto::wire::{kind, Listen};

/// Pending connections the kernel holds for the agent.
const BACKLOG: libc::c_int = 128;

/// Answers `request` on `conn` from a forked worker, like CONNECT.
pub fn start(conn: OwnedFd, request: Listen) {
    connect::in_worker(conn, |conn| match open(&request) {
        Ok(listener) => connect::send_fd(conn, kind::LISTENING, &listener),
        Err(message) => connect::reply_error(conn, &message),
    });
}

/// The listening socket a request asks for, or why not (the system's words).
pub fn open(request: &Listen) -> Result<OwnedFd, String> {
    let bare = request.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare
        .parse()
        .map_err(|_| format!("{:?} is not an IP address", request.host))?;
    bind_listener(SocketAddr::new(ip, request.port)).map_err(|e| match e.raw_os_error() {
        Some(errno) => sys::errno_text(errno),
        None => e.to_string(),
    })
}

/// A close-on-exec TCP socket bound to `addr` and listening: SO_REUSEADDR (a port in
/// TIME_WAIT is free again, as for any server), and IPv6 sockets only for IPv6 so
/// `[::]` and `0.0.0.0` are separate listeners, as OpenSSH makes them.
pub fn bind_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) with constant arguments.
    let fd = sys::cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let sock = sys::owned(fd);
    set_flag(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR)?;
    if addr.is_ipv6() {
        set_flag(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY)?;
    }
    let (storage, len) = sockaddr(&addr);
    // SAFETY: storage holds a sockaddr of the family and length given.
    sys::cvt(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    })?;
    // SAFETY: listen on a socket we own.
    sys::cvt(unsafe { libc::listen(sock.as_raw_fd(), BACKLOG) })?;
    Ok(sock)
}

fn set_flag(sock: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a valid int of the size given.
    sys::cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `addr` as the kernel takes it.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn listen(host: &str, port: u16) -> Result<TcpListener, String> {
        open(&Listen {
            host: host.into(),
            port,
        })
        .map(TcpListener::from)
    }

    #[test]
    fn listens_and_accepts() {
        let listener = listen("127.0.0.1", 0).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_ne!(addr.port(), 0);
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut served, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2];
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_taken_port_says_why() {
        let first = listen("127.0.0.1", 0).unwrap();
        let port = first.local_addr().unwrap().port();
        assert_eq!(
            listen("127.0.0.1", port).unwrap_err(),
            "Address already in use",
            "the OS's words, without the errno number"
        );
        let err = listen("localhost", 0).unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
        let err = listen("192.0.2.1", 0).unwrap_err();
        assert!(err.contains("assign"), "{err}"); // not an address of this host
    }

    #[test]
    fn ipv6_listeners_are_v6_only() {
        let listener = match listen("[::1]", 0) {
            Ok(l) => l,
            // A host without IPv6 loopback cannot test this.
            Err(e) if e.contains("assign") || e.contains("not supported") => return,
            Err(e) => panic!("{e}"),
        };
        let mut on: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: on and len are valid for getsockopt to fill.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&mut on as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!((rc, on), (0, 1));
        assert!(listener.local_addr().unwrap().is_ipv6());
    }
}
