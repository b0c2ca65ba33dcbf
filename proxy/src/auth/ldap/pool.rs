//! A few connections to the directory, kept open between logins.
//!
//! A connection is checked out by one check at a time ([`Lease`]): a bind
//! changes who the whole connection is, so two checks must never share one.
//! It is returned only when the check went well; any error drops it (and
//! its TCP connection). A connection last bound as a student is bound as the
//! search account again before its next search. A semaphore bounds the
//! connections, so a class logging in at once queues for a free one rather
//! than opening hundreds at the directory.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ldap3::{LdapConnAsync, LdapConnSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::config::LdapConfig;

/// Why a directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Connecting, TLS or the connection itself failed: the directory is
    /// down, unreachable, or not who it should be.
    #[error("{0}")]
    Connection(String),
    /// The directory answered with an error (a wrong base DN, the search
    /// account refused, a busy server).
    #[error("{0}")]
    Directory(String),
}

impl Failure {
    /// From an ldap3 error: result codes are the directory's, the rest the
    /// connection's.
    pub fn from_ldap(what: &str, e: ldap3::LdapError) -> Failure {
        match e {
            ldap3::LdapError::LdapResult { result } => Failure::Directory(format!(
                "{what}: result {} {}",
                result.rc,
                result.text.escape_debug()
            )),
            e => Failure::Connection(format!("{what}: {e}")),
        }
    }
}

/// One open connection.
pub struct Conn {
    /// The handle operations are sent through.
    pub ldap: ldap3::Ldap,
    /// Whether it is bound as the search account (false after a student's
    /// bind).
    pub as_service: bool,
    /// The task reading and writing its socket, stopped when it is dropped.
    driver: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The connections.
pub struct Pool {
    /// `auth.ldap.url`.
    url: String,
    /// TLS, StartTLS and the connect timeout.
    settings: LdapConnSettings,
    /// The search account's DN (empty: anonymous).
    service_dn: String,
    /// Its password.
    service_password: ServicePassword,
    /// Connections not checked out.
    idle: Mutex<Vec<Conn>>,
    /// One permit per connection, idle or checked out.
    slots: Semaphore,
}

/// A connection checked out for one check, with its slot.
pub struct Lease<'a> {
    pool: &'a Pool,
    conn: Conn,
    /// Whether it was open before this check (so it may have gone stale).
    pub reused: bool,
    _slot: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// The connection, bound as the search account.
    pub async fn as_service(&mut self) -> Result<&mut ldap3::Ldap, Failure> {
        if !self.conn.as_service {
            self.pool.bind_service(&mut self.conn.ldap).await?;
            self.conn.as_service = true;
        }
        Ok(&mut self.conn.ldap)
    }

    /// The connection as it is, for a student's bind after which it is no
    /// longer the search account's.
    pub fn for_student_bind(&mut self) -> &mut ldap3::Ldap {
        self.conn.as_service = false;
        &mut self.conn.ldap
    }

    /// The check went well: the connection goes back to the pool.
    pub fn keep(self) {
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.push(self.conn);
        }
    }
}

impl Pool {
    /// No connection is opened yet: the proxy starts with the directory
    /// down, and the first login finds out.
    pub fn new(config: &LdapConfig) -> anyhow::Result<Pool> {
        let tls = tls_config(config)?;
        let settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout.0)
            .set_starttls(config.starttls)
            .set_config(tls);
        Ok(Pool {
            url: config.url.clone(),
            settings,
            service_dn: config.bind_dn.clone(),
            service_password: ServicePassword::new(config.bind_password_file.clone())?,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(config.pool_size),
        })
    }

    /// A connection: an idle one if there is, else a new one. Waits for a
    /// free slot (the caller bounds the wait). `fresh` skips the idle ones.
    pub async fn get(&self, fresh: bool) -> Result<Lease<'_>, Failure> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Connection("the pool is closed".into()))?;
        let idle = if fresh { None } else { self.take_idle() };
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        Ok(Lease {
            pool: self,
            conn,
            reused,
            _slot: slot,
        })
    }

    /// An idle connection whose socket is still open, dropping closed ones.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if !conn.ldap.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| {
                let failure = Failure::from_ldap(&format!("connecting to {}", self.url), e);
                tracing::warn!(url = %self.url, "auth.ldap: {failure}");
                failure
            })?;
        let url = self.url.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(%url, "auth.ldap: connection ended: {e}");
            }
        })
        .abort_handle();
        self.bind_service(&mut ldap).await?;
        Ok(Conn {
            ldap,
            as_service: true,
            driver,
        })
    }

    /// Binds as the search account (anonymously without one).
    async fn bind_service(&self, ldap: &mut ldap3::Ldap) -> Result<(), Failure> {
        let password = self.service_password.get();
        ldap.simple_bind(&self.service_dn, &password)
            .await
            .and_then(ldap3::LdapResult::success)
            .map(drop)
            .map_err(|e| {
                let failure = Failure::from_ldap("binding as auth.ldap.bind_dn", e);
                tracing::warn!(url = %self.url, "auth.ldap: {failure}");
                failure
            })
    }
}

/// Identifies one version of a file: inode (replaced by rename), size and
/// modification time.
type FileStamp = (u64, u64, i64, i64);

fn stamp_of(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

/// The search account's password, from `bind_password_file`: read at start
/// (a file that cannot be read then stops the proxy, naming the key) and
/// again whenever the file changes, so an operator rotates the password
/// without a restart. A version that cannot be read later is logged once and
/// the last password read stays in use.
struct ServicePassword {
    /// `auth.ldap.bind_password_file`; `None`: an anonymous search.
    path: Option<PathBuf>,
    /// The stamp the password was read at, and the password.
    current: Mutex<(Option<FileStamp>, String)>,
}

impl ServicePassword {
    fn new(path: Option<PathBuf>) -> anyhow::Result<ServicePassword> {
        let current = match &path {
            Some(path) => {
                let stamp = stamp_of(path);
                let password = read_password(path)
                    .map_err(|e| anyhow::anyhow!("auth.ldap.bind_password_file: {e}"))?;
                (stamp, password)
            }
            None => (None, String::new()),
        };
        Ok(ServicePassword {
            path,
            current: Mutex::new(current),
        })
    }

    /// The password now, re-reading the file if it changed.
    fn get(&self) -> String {
        let Ok(mut current) = self.current.lock() else {
            return String::new();
        };
        if let Some(path) = &self.path {
            let stamp = stamp_of(path);
            if stamp.is_some() && stamp != current.0 {
                match read_password(path) {
                    Ok(password) => {
                        tracing::info!(path = %path.display(), "auth.ldap.bind_password_file re-read");
                        *current = (stamp, password);
                    }
                    Err(e) => {
                        // Remember the stamp: logged once per change.
                        tracing::error!("auth.ldap.bind_password_file not re-read, keeping the previous password: {e}");
                        current.0 = stamp;
                    }
                }
            }
        }
        current.1.clone()
    }
}

/// The password in `path`: its contents without the trailing line ending.
fn read_password(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Trust for the server's certificate: `ca_file`'s CAs, else the system's.
/// ring, as the rest of labssh, whatever provider is the process default.
fn tls_config(config: &LdapConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow::anyhow!("auth.ldap.ca_file: {}: {e}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "auth.ldap.ca_file: {} holds no PEM certificate",
                path.display()
            );
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("auth.ldap.ca_file: {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 && (config.url.starts_with("ldaps:") || config.starttls) {
                tracing::warn!(
                    "auth.ldap: no trusted roots found on this system; set auth.ldap.ca_file"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}
