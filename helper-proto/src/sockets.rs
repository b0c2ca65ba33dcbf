//! The TCP sockets listening in a network namespace, read from its own socket tables
//! (`/proc/net/tcp` and `/proc/net/tcp6` as seen from inside it), so what runs in a
//! container is found without asking anything in it.
//!
//! labssh-init reads them for the agent (LISTENERS), and the agent itself for a
//! container without labssh-init, from a thread inside the container's network: both
//! parse the tables here. The format is the kernel's (`net/ipv4/tcp_ipv4.c`,
//! `get_tcp4_sock`): per socket, its local address as hex words in the host's byte
//! order, a colon and the port in hex, and its state, `0A` for LISTEN. No crate is
//! used: labssh-init links nothing but std and libc.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The socket state the tables give a listening socket (`TCP_LISTEN`).
const LISTEN: &str = "0A";

/// The listening sockets of one namespace, from the text of its `tcp` and `tcp6`
/// tables (either may be empty: a kernel without IPv6 has no `tcp6`), sorted by port
/// then address, each once. Lines that do not parse are skipped.
pub fn listening(tcp: &str, tcp6: &str) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = tcp
        .lines()
        .chain(tcp6.lines())
        .filter_map(listening_line)
        .collect();
    found.sort_by_key(|a| (a.port(), a.ip()));
    found.dedup();
    found
}

/// Reads the tables of the namespace of the calling thread's `proc` directory,
/// e.g. `/proc/net` (the process's) or `/proc/thread-self/net` (the thread's).
pub fn read_listening(net_dir: &str) -> std::io::Result<Vec<SocketAddr>> {
    let tcp = std::fs::read_to_string(format!("{net_dir}/tcp"))?;
    // No IPv6 in this kernel or namespace: only the IPv4 table.
    let tcp6 = std::fs::read_to_string(format!("{net_dir}/tcp6")).unwrap_or_default();
    Ok(listening(&tcp, &tcp6))
}

/// `  0: 0100007F:1F90 00000000:0000 0A ...`: the local address of a listening socket.
fn listening_line(line: &str) -> Option<SocketAddr> {
    let mut fields = line.split_whitespace();
    let slot = fields.next()?;
    if !slot.ends_with(':') {
        return None; // the header line
    }
    let local = fields.next()?;
    let _remote = fields.next()?;
    if fields.next()? != LISTEN {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One 32-bit word of an address as the kernel prints it: `%08X` of the bytes in
/// memory read as a host-order integer, so the bytes come back with `to_ne_bytes`.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le_word(bytes: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(bytes))
    }

    #[test]
    fn listening_sockets_of_both_families() {
        // As the kernel prints them on this machine's byte order.
        let lo = le_word([127, 0, 0, 1]);
        let any = le_word([0, 0, 0, 0]);
        let peer = le_word([10, 1, 2, 3]);
        let tcp = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             \x20  0: {any}:1F90 {any}:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
             \x20  1: {lo}:0BB8 {any}:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0\n\
             \x20  2: {lo}:0BB8 {peer}:D431 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n\
             \x20  3: {lo}:0BB8 {any}:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4 1 0 100 0 0 10 0\n"
        );
        let v6_any = "0".repeat(32);
        let v6_lo = format!("{}{}", "0".repeat(24), le_word([0, 0, 0, 1]));
        let tcp6 = format!(
            "  sl  local_address                         remote_address                        st\n\
             \x20  0: {v6_any}:22B8 {v6_any}:0000 0A 00000000:00000000\n\
             \x20  1: {v6_lo}:1F90 {v6_any}:0000 0A 00000000:00000000\n\
             \x20  2: {v6_lo}:1F91 {v6_any}:0000 06 00000000:00000000\n"
        );
        let found = listening(&tcp, &tcp6);
        let want: Vec<SocketAddr> = ["127.0.0.1:3000", "0.0.0.0:8080", "[::1]:8080", "[::]:8888"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // 3000 once though two sockets listen there (SO_REUSEPORT); the established
        // connection and the TIME_WAIT one are not services.
        assert_eq!(found, want);
    }

    #[test]
    fn garbage_is_skipped() {
        let tcp =
            "junk\n  0: XYZ:1F90 0:0 0A\n  1: 0100007F 0A\n  2: 0100007F:GG 00000000:0000 0A\n";
        assert!(listening(tcp, "").is_empty());
        assert!(listening("", "").is_empty());
    }

    #[test]
    fn this_namespace_reads() {
        // This process's own tables: whatever listens, each has a port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = read_listening("/proc/net").unwrap();
        assert!(
            found.contains(&SocketAddr::from(([127, 0, 0, 1], port))),
            "{found:?} lacks 127.0.0.1:{port}"
        );
    }
}
