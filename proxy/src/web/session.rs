//! Browser sessions: a cookie every replica can check with the shared key, holding
//! who logged in (the identity the authenticators gave) and until when. HMAC-SHA256
//! over the payload; nothing is stored server-side, so replicas stay stateless and a
//! login holds on all of them.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::identity::Identity;

/// What every labssh cookie's name starts with: none is passed into a container,
/// and no container may set one.
pub const OURS: &str = "labssh_";
/// The session cookie's name. Never passed into a container.
pub const COOKIE: &str = "labssh_session";
/// The login form's anti-forgery cookie (double submit).
pub const CSRF_COOKIE: &str = "labssh_csrf";

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// The student (or TA) as they log in by SSH, without `+ENV`.
    pub user: String,
    /// Who the authenticators said they are.
    pub identity: Identity,
    /// Seconds since the epoch after which the cookie is refused.
    pub expires: u64,
}

/// Signs and checks sessions with one key.
#[derive(Clone)]
pub struct Sealer {
    key: Vec<u8>,
}

impl Sealer {
    pub fn new(key: Vec<u8>) -> Sealer {
        Sealer { key }
    }

    /// The MAC of `payload` for `purpose`, before it is finalized or checked.
    fn hmac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    fn mac(&self, purpose: &str, payload: &[u8]) -> Vec<u8> {
        self.hmac(purpose, payload).finalize().into_bytes().to_vec()
    }

    /// The cookie's value: the payload and its MAC, both hex.
    pub fn seal(&self, session: &WebSession) -> String {
        let payload = serde_json::to_vec(session).expect("a session serializes");
        format!(
            "{}.{}",
            hex::encode(&payload),
            hex::encode(self.mac("session", &payload))
        )
    }

    /// The session a cookie's value holds, if it is ours, unaltered and not expired
    /// at `now` (seconds since the epoch).
    pub fn open(&self, value: &str, now: u64) -> Option<WebSession> {
        let (payload, mac) = value.split_once('.')?;
        let payload = hex::decode(payload).ok()?;
        let mac = hex::decode(mac).ok()?;
        self.hmac("session", &payload).verify_slice(&mac).ok()?;
        let session: WebSession = serde_json::from_slice(&payload).ok()?;
        (session.expires > now && labssh_proto::names::valid_user(&session.user)).then_some(session)
    }

    /// The anti-forgery token of forms shown to the holder of cookie `value`: only
    /// someone who can read the page (not another site posting to it) has it.
    pub fn form_token(&self, value: &str) -> String {
        hex::encode(&self.mac("form", value.as_bytes())[..16])
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cookie's value from a `Cookie` header's text.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Cookie` header's text without labssh's own cookies, or `None` when nothing is
/// left: what a container's service is sent.
pub fn without_ours(header: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(OURS))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(expires: u64) -> WebSession {
        let mut identity = Identity::from("users_file");
        identity.groups = vec!["cs101".into()];
        WebSession {
            user: "alice".into(),
            identity,
            expires,
        }
    }

    #[test]
    fn a_sealed_session_opens_only_unaltered_unexpired_and_with_its_key() {
        let sealer = Sealer::new(vec![7; 32]);
        let value = sealer.seal(&alice(2000));
        assert_eq!(sealer.open(&value, 1000), Some(alice(2000)));
        assert_eq!(sealer.open(&value, 2000), None, "expired");
        assert_eq!(
            Sealer::new(vec![8; 32]).open(&value, 1000),
            None,
            "another key"
        );
        // Bob's name in alice's payload, with her MAC.
        let (payload, mac) = value.split_once('.').unwrap();
        let text = String::from_utf8(hex::decode(payload).unwrap()).unwrap();
        let forged = hex::encode(text.replace("alice", "bob"));
        assert_eq!(sealer.open(&format!("{forged}.{mac}"), 1000), None);
        for junk in ["", ".", "zz.zz", &value[1..], "abc"] {
            assert_eq!(sealer.open(junk, 1000), None, "{junk}");
        }
        // A form token belongs to one cookie.
        let other = sealer.seal(&alice(3000));
        assert_ne!(sealer.form_token(&value), sealer.form_token(&other));
    }

    #[test]
    fn our_cookies_are_found_and_never_passed_on() {
        let header = "theme=dark; labssh_session=abc.def; labssh_csrf=x; _xsrf=2|a";
        assert_eq!(cookie(header, COOKIE), Some("abc.def"));
        assert_eq!(cookie(header, "missing"), None);
        assert_eq!(
            without_ours(header).as_deref(),
            Some("theme=dark; _xsrf=2|a")
        );
        assert_eq!(without_ours("labssh_session=abc"), None);
    }
}
