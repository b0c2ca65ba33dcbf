//! Logins decided by a real directory: Debian's slapd on loopback (started
//! by labssh-testkit for each test), the whole lab in-process, the stock
//! `ssh` client. One module per area:
//!
//! - `logins`: password and key logins from LDAP beside the users file;
//!   wrong passwords, unknown users and crafted names refused plainly;
//! - `outage`: slapd stopped mid-run — a cached student still gets in, an
//!   uncached one reads that the login service is unavailable, promptly;
//!   slapd back, logins work; one that never answers costs its timeout;
//! - `tls`: ldaps:// and StartTLS with the test's CA; another CA refused;
//! - `identity`: the directory's groups decide environments (and the list a
//!   refused student sees), its uidNumber/gidNumber run a `uid = "ldap"`
//!   container and own its home; the cache keeps both while it is down.
//!
//! What the authenticator answers (groups, uid/gid, injection through the
//! search filter, pooling, hangs) is tested against slapd directly, in
//! labssh-proxy's `auth::ldap::tests`.

#[path = "../lab/mod.rs"]
mod lab;

mod identity;
mod logins;
mod outage;
mod tls;

use labssh_proxy::config::auth::AuthConfig;
use labssh_testkit::slapd::Slapd;

/// What students read when the directory cannot be asked.
pub const UNAVAILABLE: &str = "labssh: the login service is unavailable; try again in a minute";

/// The proxy's `[auth]` for `server` at `url` (see `lab::ldap_auth`).
pub fn auth(server: &Slapd, url: String) -> AuthConfig {
    lab::ldap_auth(server, url)
}
