//! PROXY protocol v2 from trusted load balancers.
//!
//! Only peers in the configured CIDR allow-list may send a header; their
//! header names the student's real address, which then appears in logs and
//! rate limits. Anyone else is served as plain SSH: a header from them is
//! not read, so it fails the SSH handshake and the connection is refused.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A balancer sends its header at once; a peer that says nothing this long
/// is not one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest header we accept (addresses plus a few TLVs). HAProxy's are
/// well under this; anything bigger is not a header we want to buffer.
const MAX_HEADER: usize = 1024;
/// Fixed part of a v2 header: 12-byte signature, version/command,
/// family/protocol and a 2-byte length.
const MINIMUM_LENGTH: usize = 16;

/// What to do with a connection, once its header (if any) was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The client's address: from the header, or the socket's own.
    Client(SocketAddr),
}

/// Why a connection was refused before SSH started.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header from trusted balancer {0} (proxy_protocol.required = true)")]
    Missing(SocketAddr),
    #[error("malformed PROXY header from {peer}: {reason}")]
    Malformed { peer: SocketAddr, reason: String },
    #[error("timed out waiting for a PROXY header from {0}")]
    Timeout(SocketAddr),
    #[error("reading PROXY header from {peer}: {source}")]
    Io {
        peer: SocketAddr,
        source: std::io::Error,
    },
}

/// PROXY protocol policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Balancers allowed to send a header.
    pub trusted: Vec<IpNet>,
    /// Whether a trusted peer must send one (true behind HAProxy with
    /// `send-proxy-v2`); if false, a connection without one is served with
    /// the socket's address.
    pub required: bool,
}

impl Policy {
    /// The policy `[proxy_protocol]` sets, for the SSH listener and the web front
    /// door alike (they sit behind the same balancers).
    pub fn of(config: &crate::config::ProxyProtocolConfig) -> anyhow::Result<Policy> {
        Ok(Policy {
            trusted: parse_trusted(&config.trusted).map_err(|p| anyhow::anyhow!(p.join("; ")))?,
            required: config.required,
        })
    }

    /// Whether `peer` is a balancer that may send a header.
    pub fn trusts(&self, peer: &SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Reads the header from a trusted peer, leaving the stream positioned
    /// at the first SSH (or TLS) byte. Untrusted peers are not read from at all.
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<Peer, ProxyHeaderError> {
        if !self.trusts(&peer) {
            return Ok(Peer::Client(peer));
        }
        match tokio::time::timeout(
            HEADER_TIMEOUT,
            tracing::Instrument::instrument(
                self.read_header(stream, peer),
                tracing::info_span!("proxy_header"),
            ),
        )
        .await
        {
            Ok(result) => result,
            Err(_) if !self.required => Ok(Peer::Client(peer)),
            Err(_) => Err(ProxyHeaderError::Timeout(peer)),
        }
    }

    async fn read_header(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<Peer, ProxyHeaderError> {
        let io = |source| ProxyHeaderError::Io { peer, source };
        // Peek first: without `required`, a client that speaks SSH directly
        // must find its bytes still in the stream.
        let mut probe = [0u8; MINIMUM_LENGTH];
        let len = loop {
            let n = stream.peek(&mut probe).await.map_err(io)?;
            if n == 0 {
                return Err(ProxyHeaderError::Missing(peer));
            }
            match prefix(&probe[..n]) {
                Prefix::NotProxy if self.required => return Err(ProxyHeaderError::Missing(peer)),
                Prefix::NotProxy => return Ok(Peer::Client(peer)),
                Prefix::Header(len) => break len,
                // Part of a header so far: wait for the rest to arrive.
                Prefix::Partial => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        let malformed = |reason| ProxyHeaderError::Malformed { peer, reason };
        let len = len.map_err(malformed)?;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let client = decode(&buf).map_err(malformed)?;
        Ok(Peer::Client(client.unwrap_or(peer)))
    }
}

/// What the first bytes from a trusted peer say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix {
    /// Not a PROXY v2 signature: SSH (or anything else) straight away.
    NotProxy,
    /// A signature so far; its fixed part has not all arrived.
    Partial,
    /// A v2 header of this many bytes in all, or why it cannot be one we read.
    Header(Result<usize, String>),
}

/// Judges up to the first [`MINIMUM_LENGTH`] bytes of a connection.
pub fn prefix(seen: &[u8]) -> Prefix {
    let seen = &seen[..seen.len().min(MINIMUM_LENGTH)];
    let prefix_len = seen.len().min(PROTOCOL_PREFIX.len());
    if seen[..prefix_len] != PROTOCOL_PREFIX[..prefix_len] {
        return Prefix::NotProxy;
    }
    if seen.len() < MINIMUM_LENGTH {
        return Prefix::Partial;
    }
    let len = MINIMUM_LENGTH + u16::from_be_bytes([seen[14], seen[15]]) as usize;
    Prefix::Header(if len > MAX_HEADER {
        Err(format!("{len} bytes is too long"))
    } else {
        Ok(len)
    })
}

/// The client address a whole header names: `None` for LOCAL (the balancer's own
/// health check) or a family without addresses.
pub fn decode(header: &[u8]) -> Result<Option<SocketAddr>, String> {
    let header = Header::try_from(header).map_err(|e| e.to_string())?;
    Ok(client_address(&header))
}

/// The header a balancer sends for `client` (to the unspecified address of its
/// family): what [`decode`] reads back as `client`. For tests and the fuzz checks.
pub fn encode(client: SocketAddr) -> Vec<u8> {
    let to = match client {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, to),
    )
    .build()
    .expect("a header of two addresses fits")
}

/// The original client address of a PROXY command; `None` for LOCAL (the
/// balancer's own health check) or non-IP families.
fn client_address(header: &Header<'_>) -> Option<SocketAddr> {
    if header.command == Command::Local {
        return None;
    }
    match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        _ => None,
    }
}

/// Parses the allow-list; each bad entry is reported with its index.
pub fn parse_trusted(entries: &[String]) -> Result<Vec<IpNet>, Vec<String>> {
    let mut nets = Vec::new();
    let mut problems = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match labssh_proto::net::parse_net(entry) {
            Ok(net) => nets.push(net),
            Err(_) => problems.push(format!(
                "proxy_protocol.trusted[{i}]: {entry:?} is not an address or CIDR like 10.0.0.0/8"
            )),
        }
    }
    if problems.is_empty() {
        Ok(nets)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn v2_header(src: &str, dst: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, dst))
            .build()
            .unwrap()
    }

    async fn connect_and_send(bytes: Vec<u8>) -> (TcpStream, SocketAddr, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&bytes).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (server, peer, client)
    }

    fn policy(trusted: &[&str], required: bool) -> Policy {
        Policy {
            trusted: parse_trusted(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
            required,
        }
    }

    #[tokio::test]
    async fn trusted_header_gives_the_real_client_and_keeps_the_ssh_bytes() {
        let mut bytes = v2_header("203.0.113.7:50000", "127.0.0.1:2222");
        bytes.extend_from_slice(b"SSH-2.0-OpenSSH_9.2\r\n");
        let (mut server, peer, _client) = connect_and_send(bytes).await;
        let got = policy(&["127.0.0.0/8"], true)
            .accept(&mut server, peer)
            .await
            .unwrap();
        assert_eq!(got, Peer::Client("203.0.113.7:50000".parse().unwrap()));
        let mut rest = vec![0u8; 21];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"SSH-2.0-OpenSSH_9.2\r\n");
    }

    #[tokio::test]
    async fn untrusted_peers_are_not_read() {
        let bytes = v2_header("203.0.113.7:50000", "127.0.0.1:2222");
        let (mut server, peer, _client) = connect_and_send(bytes.clone()).await;
        let got = policy(&["10.0.0.0/8"], true)
            .accept(&mut server, peer)
            .await
            .unwrap();
        assert_eq!(got, Peer::Client(peer));
        // The header is still there, to fail the SSH handshake.
        let mut first = vec![0u8; bytes.len()];
        server.read_exact(&mut first).await.unwrap();
        assert_eq!(first, bytes);
    }

    #[tokio::test]
    async fn required_header_missing_is_refused_optional_is_served() {
        let (mut server, peer, _c) = connect_and_send(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()).await;
        let err = policy(&["127.0.0.1"], true)
            .accept(&mut server, peer)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no PROXY header"), "{err}");

        let (mut server, peer, _c) = connect_and_send(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()).await;
        let got = policy(&["127.0.0.1"], false)
            .accept(&mut server, peer)
            .await
            .unwrap();
        assert_eq!(got, Peer::Client(peer));
        let mut rest = vec![0u8; 4];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"SSH-");
    }

    #[tokio::test]
    async fn local_command_keeps_the_socket_address() {
        let bytes = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (mut server, peer, _c) = connect_and_send(bytes).await;
        let got = policy(&["127.0.0.1/32"], true)
            .accept(&mut server, peer)
            .await
            .unwrap();
        assert_eq!(got, Peer::Client(peer));
    }

    #[test]
    fn bad_cidrs_are_named() {
        let err = parse_trusted(&["10.0.0.0/8".into(), "nonsense".into()]).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("proxy_protocol.trusted[1]"), "{err:?}");
    }
}
