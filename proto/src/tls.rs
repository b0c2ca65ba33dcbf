//! Mutual TLS between proxy, controller and agents.
//!
//! Every node holds a certificate per role signed by the cluster's own CA
//! (`labssh certs` makes them). Servers require a client certificate from
//! that CA, so a student's container that reaches an agent or controller
//! port still cannot say anything to it, and [`crate::roles`] decides what
//! each certificate's role may call. Clients verify servers by name
//! ([`CONTROLLER_NAME`], [`crate::roles::server_name`] for agents) rather
//! than by address, so the same certificate serves whatever address a node
//! has.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// Any failure to apply TLS material: an unreadable file, or one tonic
/// rejects.
pub type ApplyError = Box<dyn std::error::Error + Send + Sync>;

/// Name in the controller's certificate that clients verify.
pub const CONTROLLER_NAME: &str = "labssh-controller";

/// PEM files of one role. All three empty means TLS is off (plain
/// HTTP/2, for a single box or tests); all three set means mTLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// The cluster CA certificate; peers must be signed by it.
    pub ca: PathBuf,
    /// This role's certificate chain.
    pub cert: PathBuf,
    /// This role's private key.
    pub key: PathBuf,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TlsError {
    /// The file that could not be read.
    pub path: PathBuf,
    /// What went wrong.
    pub source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsFiles {
    /// Whether mTLS is configured.
    pub fn enabled(&self) -> bool {
        !self.ca.as_os_str().is_empty()
    }

    /// Problems with the settings, each named under `section` (e.g. "tls").
    pub fn problems(&self, section: &str) -> Vec<String> {
        let fields = [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)];
        let set = fields
            .iter()
            .filter(|(_, p)| !p.as_os_str().is_empty())
            .count();
        if set == 0 {
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (name, path) in fields {
            if path.as_os_str().is_empty() {
                problems.push(format!(
                    "{section}.{name}: required when any of {section}.ca/cert/key is set"
                ));
            } else if !path.is_file() {
                problems.push(format!(
                    "{section}.{name}: {} does not exist",
                    path.display()
                ));
            }
        }
        problems
    }

    /// Logs, once at a role's start, that without mTLS anyone who reaches
    /// its ports may call every RPC.
    pub fn warn_if_off(&self, role: &str) {
        if !self.enabled() {
            tracing::warn!(
                role,
                "mTLS is off: there are no roles, and anything that reaches the gRPC ports may call \
                 every RPC; set [tls] (labssh certs) outside a single trusted box"
            );
        }
    }

    /// `http` or `https`, for building endpoint URLs.
    pub fn scheme(&self) -> &'static str {
        if self.enabled() {
            "https"
        } else {
            "http"
        }
    }

    /// Server side: our identity, and client certificates required.
    pub fn server(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }

    /// A gRPC server builder, with mTLS when it is configured.
    pub fn server_builder(&self) -> Result<Server, ApplyError> {
        let builder = Server::builder();
        if !self.enabled() {
            return Ok(builder);
        }
        Ok(builder.tls_config(self.server()?)?)
    }

    /// `endpoint` verifying the server as `server_name` and presenting our
    /// identity when mTLS is configured; unchanged otherwise.
    pub fn secure(&self, endpoint: Endpoint, server_name: &str) -> Result<Endpoint, ApplyError> {
        if !self.enabled() {
            return Ok(endpoint);
        }
        Ok(endpoint.tls_config(self.client(server_name)?)?)
    }

    /// Client side: verify the server as `server_name`, present our identity.
    pub fn client(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(server_name))
    }
}
