//! Who may call what: roles carried in cluster certificates, and the one
//! check every gRPC server applies before a call reaches its service.
//!
//! `labssh certs` issues one certificate per node and per role. Each carries
//! exactly one URI subject name `spiffe://labssh/ROLE/NAME` (the SPIFFE ID
//! form, so other tooling can read it too) naming its role and the node,
//! replica or operator it belongs to, and a DNS name clients verify servers
//! by ([`server_name`]): `labssh-controller` for the controller and
//! `NAME.agent.labssh` for agent NAME, so a proxy that dials the agent the
//! controller placed a user on refuses any other node's certificate.
//!
//! The CA has already vouched for the certificate when a call arrives (the
//! TLS handshake checked it), so reading the URI is enough to trust it; what
//! remains is whether that role may make this call ([`required`]). [`Guard`]
//! wraps a tonic service, refuses a call from the wrong role with
//! `PERMISSION_DENIED` naming the role required and the role presented, logs
//! it, and hands the caller's [`Peer`] to the service in the request's
//! extensions (the controller checks an agent registers only under its own
//! name). Without mTLS there are no roles and the guard lets everything
//! through; each role warns about that once at start.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::pb;
use crate::tls::CONTROLLER_NAME;

/// The SPIFFE trust domain of labssh clusters, in every certificate's URI.
const URI_PREFIX: &str = "spiffe://labssh/";
/// Suffix of the DNS names of per-node certificates: `node7.agent.labssh`.
/// `.labssh` is no public top-level domain, so no public CA can issue one.
pub const DNS_SUFFIX: &str = "labssh";
/// A DNS label's limit, which a node name must fit as the first label.
const MAX_NAME_LEN: usize = 63;

/// What a certificate entitles its holder to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// An SSH proxy replica: places users, drives agents' sessions.
    Proxy,
    /// A backend agent on one node: registers with the controller, serves sessions.
    Agent,
    /// The controller: serves the registry and placement.
    Controller,
    /// An operator's tool (`labssh agent drain`).
    Admin,
}

impl Role {
    /// Every role, in the order `labssh certs` issues them.
    pub const ALL: [Role; 4] = [Role::Controller, Role::Proxy, Role::Agent, Role::Admin];

    /// The role's name in certificates, file names and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Proxy => "proxy",
            Role::Agent => "agent",
            Role::Controller => "controller",
            Role::Admin => "admin",
        }
    }

    /// Whether peers dial this role (its certificate must be good for TLS
    /// servers).
    pub fn serves(self) -> bool {
        matches!(self, Role::Agent | Role::Controller)
    }

    /// Whether this role dials others (its certificate must be good for TLS
    /// clients). Every role does: the controller dials agents for a prestart.
    pub fn dials(self) -> bool {
        matches!(
            self,
            Role::Proxy | Role::Agent | Role::Controller | Role::Admin
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role; use proxy, agent, controller or admin"))
    }
}

/// Checks that `name` can name a certificate's holder: the first label of
/// its DNS name and the last segment of its URI.
pub fn check_name(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let chars_ok = !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    let labels_ok = name
        .split('.')
        .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if chars_ok && labels_ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.', start with a \
             letter or digit, and have no empty dot-separated part nor one that starts or ends with '-'"
        ))
    }
}

/// The DNS name clients verify a server of `role` named `name` by:
/// `labssh-controller` for the (one) controller, `NAME.ROLE.labssh` otherwise.
pub fn server_name(role: Role, name: &str) -> String {
    match role {
        Role::Controller => CONTROLLER_NAME.to_string(),
        _ => format!("{name}.{role}.{DNS_SUFFIX}"),
    }
}

/// The URI subject name of `role`'s certificate for `name`.
pub fn uri(role: Role, name: &str) -> String {
    format!("{URI_PREFIX}{role}/{name}")
}

/// The holder of a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What it may do.
    pub role: Role,
    /// The node, replica or operator the certificate was issued to.
    pub name: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

/// Why a certificate names no labssh role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The DER does not parse as an X.509 certificate.
    #[error("an unreadable certificate")]
    Unparsable,
    /// No `spiffe://labssh/ROLE/NAME` subject name: a certificate from before
    /// roles existed, or not from `labssh certs`.
    #[error("a certificate without a labssh role (reissue it with `labssh certs`)")]
    NoRole,
    /// More than one labssh URI: ambiguous, so honoured as none.
    #[error("a certificate naming several labssh roles")]
    Several,
    /// A labssh URI that is not `ROLE/NAME` with a known role and a valid name.
    #[error("a certificate with a malformed labssh name {0:?}")]
    Malformed(String),
}

impl Peer {
    /// Reads the role and name of a DER certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Peer, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|_| IdentityError::Unparsable)?
            .ok_or(IdentityError::NoRole)?;
        let mut ours = sans.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(URI_PREFIX),
            _ => None,
        });
        let path = ours.next().ok_or(IdentityError::NoRole)?;
        if ours.next().is_some() {
            return Err(IdentityError::Several);
        }
        let malformed = || IdentityError::Malformed(path.to_string());
        let (role, name) = path.split_once('/').ok_or_else(malformed)?;
        let role = role.parse().map_err(|_| malformed())?;
        check_name(name).map_err(|_| malformed())?;
        Ok(Peer {
            role,
            name: name.to_string(),
        })
    }
}

/// The roles that may call the gRPC method at `path`
/// (`/labssh.v1.Controller/Place`); `None` for a method no role may call.
pub fn required(path: &str) -> Option<&'static [Role]> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let roles: &'static [Role] = match (service, method) {
        (pb::controller_server::SERVICE_NAME, method) => match method {
            // The registration stream: only an agent, under its own name.
            "Attach" => &[Role::Agent],
            "Place" => &[Role::Proxy],
            "ListEnvironments" => &[Role::Proxy, Role::Admin],
            "ListAgents" | "Drain" | "Prestart" | "ListSessions" | "Kick" | "Watch" => {
                &[Role::Admin]
            }
            "Report" | "Feed" => &[Role::Proxy],
            // A proxy asks for its student's own (self-service logins).
            "ListContainers" | "ContainerAction" | "ListServices" => &[Role::Admin, Role::Proxy],
            _ => return None,
        },
        (pb::agent_server::SERVICE_NAME, "Session" | "Forward" | "Listen") => &[Role::Proxy],
        // The controller ensures containers for a prestart.
        (pb::agent_server::SERVICE_NAME, "Ensure") => &[Role::Proxy, Role::Controller],
        // Operators' and students' container actions, relayed by the controller.
        (pb::agent_server::SERVICE_NAME, "Act") => &[Role::Controller],
        _ => return None,
    };
    Some(roles)
}

/// Why a call was refused; its text is the `PERMISSION_DENIED` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No role may call the method (a method newer than this policy).
    #[error("{path} is not open to any role")]
    UnknownMethod {
        /// The gRPC path.
        path: String,
    },
    /// The connection carries no client certificate (cannot happen while
    /// the server requires one; refused all the same).
    #[error("{path} requires the role {required}; the caller presented no certificate")]
    NoCertificate {
        /// The gRPC path.
        path: String,
        /// The roles that may call it, e.g. "agent" or "proxy or admin".
        required: RoleList,
    },
    /// The certificate names no usable role.
    #[error("{path} requires the role {required}; the caller presented {why}")]
    NoRole {
        /// The gRPC path.
        path: String,
        /// The roles that may call it.
        required: RoleList,
        /// What is wrong with the certificate.
        why: IdentityError,
    },
    /// The certificate's role may not call this method.
    #[error("{path} requires the role {required}; the caller presented the role {} (certificate of {:?})", presented.role, presented.name)]
    WrongRole {
        /// The gRPC path.
        path: String,
        /// The roles that may call it.
        required: RoleList,
        /// Who called.
        presented: Peer,
    },
}

/// Roles for a message: "agent", "proxy or admin".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleList(pub &'static [Role]);

impl fmt::Display for RoleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(" or "))
    }
}

/// The policy decision for one call: the caller, or why it is refused.
/// `certificate` is the caller's end-entity certificate (DER), if any.
pub fn authorize(path: &str, certificate: Option<&[u8]>) -> Result<Peer, Denied> {
    let path_owned = || path.to_string();
    let required =
        RoleList(required(path).ok_or_else(|| Denied::UnknownMethod { path: path_owned() })?);
    let der = certificate.ok_or_else(|| Denied::NoCertificate {
        path: path_owned(),
        required: required.clone(),
    })?;
    let peer = Peer::from_certificate(der).map_err(|why| Denied::NoRole {
        path: path_owned(),
        required: required.clone(),
        why,
    })?;
    if required.0.contains(&peer.role) {
        Ok(peer)
    } else {
        Err(Denied::WrongRole {
            path: path_owned(),
            required,
            presented: peer,
        })
    }
}

/// A gRPC service behind the role check. Build it with [`Guard::new`] where
/// the server is assembled, so no method can forget the check.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    /// The service calls go to once allowed.
    inner: S,
    /// False without mTLS: no certificates, so no roles to check.
    enforce: bool,
}

impl<S> Guard<S> {
    /// `inner`, checked when `mtls` is on and passed through otherwise.
    pub fn new(inner: S, mtls: bool) -> Guard<S> {
        Guard {
            inner,
            enforce: mtls,
        }
    }
}

impl<S: NamedService> NamedService for Guard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !self.enforce {
            return Box::pin(self.inner.call(request));
        }
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let remote: Option<SocketAddr> = tls.and_then(|t| t.get_ref().remote_addr());
        let certs = tls.and_then(|t| t.peer_certs());
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        match authorize(request.uri().path(), leaf) {
            Ok(peer) => {
                request.extensions_mut().insert(peer);
                Box::pin(self.inner.call(request))
            }
            Err(denied) => {
                tracing::warn!(
                    peer = ?remote,
                    path = request.uri().path(),
                    "refused a call: {denied}"
                );
                let response = Status::permission_denied(denied.to_string()).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(uris: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["x.agent.labssh".to_string()]).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_from_the_uri() {
        assert_eq!(
            Peer::from_certificate(&cert(&["spiffe://labssh/agent/node7"])),
            Ok(Peer {
                role: Role::Agent,
                name: "node7".into()
            })
        );
        // Other URIs are ignored; ours must be there exactly once.
        assert_eq!(
            Peer::from_certificate(&cert(&[
                "https://example.org/",
                "spiffe://labssh/admin/ops"
            ]))
            .unwrap()
            .role,
            Role::Admin
        );
        assert_eq!(
            Peer::from_certificate(&cert(&[])),
            Err(IdentityError::NoRole)
        );
        assert_eq!(
            Peer::from_certificate(&cert(&["spiffe://other/agent/x"])),
            Err(IdentityError::NoRole)
        );
        assert_eq!(
            Peer::from_certificate(&cert(&[
                "spiffe://labssh/proxy/a",
                "spiffe://labssh/agent/b"
            ])),
            Err(IdentityError::Several)
        );
        for bad in [
            "spiffe://labssh/root/x",
            "spiffe://labssh/agent",
            "spiffe://labssh/agent/",
            "spiffe://labssh/agent/a/b",
        ] {
            assert!(
                matches!(
                    Peer::from_certificate(&cert(&[bad])),
                    Err(IdentityError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            Peer::from_certificate(b"not a certificate"),
            Err(IdentityError::Unparsable)
        );
    }

    #[test]
    fn names() {
        for good in ["node7", "a", "node-1.rack2", "n_1", "A1"] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a.-b",
            "a b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(server_name(Role::Agent, "node7"), "node7.agent.labssh");
        assert_eq!(server_name(Role::Controller, "c1"), CONTROLLER_NAME);
        assert_eq!(uri(Role::Proxy, "p1"), "spiffe://labssh/proxy/p1");
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn policy() {
        let allowed = |path: &str, role: &str| {
            authorize(path, Some(&cert(&[&format!("spiffe://labssh/{role}/n")]))).is_ok()
        };
        assert!(allowed("/labssh.v1.Controller/Attach", "agent"));
        assert!(!allowed("/labssh.v1.Controller/Attach", "proxy"));
        assert!(allowed("/labssh.v1.Controller/Place", "proxy"));
        assert!(!allowed("/labssh.v1.Controller/Place", "agent"));
        assert!(allowed("/labssh.v1.Controller/Drain", "admin"));
        assert!(!allowed("/labssh.v1.Controller/Drain", "proxy"));
        assert!(allowed("/labssh.v1.Controller/Prestart", "admin"));
        assert!(!allowed("/labssh.v1.Controller/Prestart", "proxy"));
        for admin_only in ["ListSessions", "Kick", "Watch"] {
            let path = format!("/labssh.v1.Controller/{admin_only}");
            assert!(allowed(&path, "admin"), "{path}");
            assert!(
                !allowed(&path, "proxy") && !allowed(&path, "agent"),
                "{path}"
            );
        }
        assert!(allowed("/labssh.v1.Controller/Report", "proxy"));
        assert!(!allowed("/labssh.v1.Controller/Report", "admin"));
        // Only a proxy feeds a watched session; an operator cannot write into one.
        assert!(allowed("/labssh.v1.Controller/Feed", "proxy"));
        assert!(!allowed("/labssh.v1.Controller/Feed", "admin"));
        assert!(allowed("/labssh.v1.Agent/Ensure", "controller"));
        assert!(!allowed("/labssh.v1.Agent/Ensure", "admin"));
        for path in [
            "/labssh.v1.Controller/ListContainers",
            "/labssh.v1.Controller/ContainerAction",
            "/labssh.v1.Controller/ListServices",
        ] {
            assert!(allowed(path, "admin") && allowed(path, "proxy"), "{path}");
            assert!(!allowed(path, "agent"), "{path}");
        }
        // Only the controller drives an agent's container actions: an operator's
        // certificate goes through the controller, which says who asked.
        assert!(allowed("/labssh.v1.Agent/Act", "controller"));
        for role in ["admin", "proxy", "agent"] {
            assert!(!allowed("/labssh.v1.Agent/Act", role), "{role}");
        }
        assert!(allowed("/labssh.v1.Agent/Session", "proxy"));
        assert!(!allowed("/labssh.v1.Agent/Session", "agent"));
        assert!(!allowed("/labssh.v1.Agent/Session", "controller"));
        assert!(!allowed("/labssh.v1.Agent/Nope", "proxy"));
        assert!(!allowed("/grpc.health.v1.Health/Check", "proxy"));

        let message = authorize(
            "/labssh.v1.Controller/Drain",
            Some(&cert(&["spiffe://labssh/proxy/p1"])),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("requires the role admin") && message.contains("the role proxy"),
            "{message}"
        );
        let message = authorize("/labssh.v1.Controller/ListEnvironments", Some(&cert(&[])))
            .unwrap_err()
            .to_string();
        assert!(message.contains("proxy or admin"), "{message}");
        assert!(matches!(
            authorize("/labssh.v1.Agent/Session", None),
            Err(Denied::NoCertificate { .. })
        ));
    }

    /// A new RPC in the proto must get a line in [`required`], or no role can
    /// call it.
    #[test]
    fn every_rpc_has_a_policy() {
        let proto = include_str!("../proto/labssh/v1/labssh.proto");
        let mut service = "";
        let mut seen = 0;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().unwrap();
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let method = rest.split('(').next().unwrap().trim();
                let path = format!("/labssh.v1.{service}/{method}");
                assert!(required(&path).is_some(), "no policy for {path}");
                seen += 1;
            }
        }
        assert!(seen >= 9, "found only {seen} rpcs in the proto");
    }
}
