//! The endpoint an agent advertises, made routable for proxies and the
//! controller's own prestart calls.

use std::net::{IpAddr, SocketAddr};

use tonic::codegen::http::Uri;

/// The endpoint proxies should use for an agent. An agent listening on all
/// interfaces often reports `http://0.0.0.0:7001`; that host is replaced by
/// the address its Attach stream came from, which is routable from here.
pub(super) fn advertised_endpoint(
    endpoint: &str,
    peer: Option<SocketAddr>,
) -> Result<String, String> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URI: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(format!("{endpoint:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{endpoint:?} has no host"))?;
    let unspecified = authority
        .host()
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    match (unspecified, peer) {
        (true, Some(peer)) => {
            let host = match peer.ip().to_canonical() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            let port = authority
                .port()
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let path = uri
                .path_and_query()
                .map(|p| p.as_str())
                .filter(|p| *p != "/")
                .unwrap_or("");
            Ok(format!("{scheme}://{host}{port}{path}"))
        }
        _ => Ok(endpoint.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let peer: SocketAddr = "10.0.0.5:43210".parse().unwrap();
        let ok = |e: &str, p| advertised_endpoint(e, p).unwrap();
        assert_eq!(
            ok("http://10.0.0.7:7001", Some(peer)),
            "http://10.0.0.7:7001"
        );
        assert_eq!(ok("http://node-1:7001", Some(peer)), "http://node-1:7001");
        assert_eq!(
            ok("http://0.0.0.0:7001", Some(peer)),
            "http://10.0.0.5:7001"
        );
        assert_eq!(ok("https://[::]:7001", Some(peer)), "https://10.0.0.5:7001");
        assert_eq!(ok("http://0.0.0.0:7001", None), "http://0.0.0.0:7001");
        let v6: SocketAddr = "[fd00::5]:1".parse().unwrap();
        assert_eq!(ok("http://0.0.0.0:7001", Some(v6)), "http://[fd00::5]:7001");
        assert!(advertised_endpoint("", None).is_err());
        assert!(advertised_endpoint("10.0.0.7:7001", None).is_err());
        assert!(advertised_endpoint("ftp://x:1", None).is_err());
    }
}
