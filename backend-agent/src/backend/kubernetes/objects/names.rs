//! Object names and label values Kubernetes accepts, made from names it may not.
//!
//! Pods, claims and network policies are named as DNS-1123 subdomains; label values
//! are at most 63 of `[A-Za-z0-9_.-]`, starting and ending alphanumeric. labssh's
//! names mostly fit: `{prefix}-{user}.{env}` as on Docker. Those that do not (a user
//! `_x` or `bob-`, an environment `Web` or `py_3`, a long prefix) get a form made of
//! the name's letters and a hash of the exact name, so the object stays unique and
//! the same name always gives the same object. The escaped forms are told apart from
//! the plain ones by their shape (see [`pod_name`], [`claim_name`]), and the real
//! names always travel in the object's annotations, which the inventory reads.

use sha2::{Digest, Sha256};

/// DNS labels and label values are at most this long.
const MAX_LABEL: usize = 63;
/// DNS-1123 subdomains (object names) are at most this long.
const MAX_SUBDOMAIN: usize = 253;
/// Hex digits of the hash an escaped name carries: 32 bits, unique enough among one
/// agent's students, and every clash is still caught by the labels (`NameTaken`).
const HASH_DIGITS: usize = 8;

/// A DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_dns_label)
}

/// A label value: empty, or `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63.
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.is_empty()
        || (s.len() <= MAX_LABEL
            && alnum(s.bytes().next())
            && alnum(s.bytes().last())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
}

/// The first [`HASH_DIGITS`] hex digits of SHA-256 over `parts`, NUL-separated (no
/// two lists of parts hash the same text).
fn hash(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\0").as_bytes());
    hex::encode(digest)[..HASH_DIGITS].to_owned()
}

/// `text` in lower-case letters, digits and `-` (anything else becomes `-`), at most
/// `max` long, with no `-` at either end; `x` when nothing is left.
fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    out.truncate(max);
    let out = out.trim_matches('-');
    if out.is_empty() {
        "x".to_owned()
    } else {
        out.to_owned()
    }
}

/// `{body}-{hash}` as one DNS label: the body sanitized and cut to fit.
fn escaped(body: &str, parts: &[&str]) -> String {
    let body = sanitize(body, MAX_LABEL - HASH_DIGITS - 1);
    format!("{body}-{}", hash(parts))
}

/// The pod's name for `user`'s `env`: `{prefix}-{user}.{env}` when that is a DNS-1123
/// subdomain (user names never hold a `.`, so it tells user and environment apart, as
/// on Docker); else one DNS label `{prefix}-{user}-{env}` sanitized and cut, ending in
/// a hash of the three exact names. A plain name always holds a `.` after
/// `{prefix}-` and an escaped one never does, so the two forms never meet.
pub fn pod_name(prefix: &str, user: &str, env: &str) -> String {
    let plain = format!("{prefix}-{user}.{env}");
    if is_dns_subdomain(&plain) {
        return plain;
    }
    escaped(&format!("{prefix}-{user}-{env}"), &[prefix, user, env])
}

/// The home claim's name for `user`: `{prefix}-home-{user}` when that is a DNS-1123
/// subdomain, as Docker's home volume; else `{prefix}-home.{user}-{hash}` sanitized
/// (the `.` after `home` is what no plain name of the prefix has there).
pub fn claim_name(prefix: &str, user: &str) -> String {
    let plain = format!("{prefix}-home-{user}");
    if is_dns_subdomain(&plain) {
        return plain;
    }
    let head = sanitize(&format!("{prefix}-home"), MAX_LABEL);
    format!("{head}.{}", escaped(user, &[prefix, user]))
}

/// `value` as a label value: itself when valid, else sanitized with a hash of it
/// (the real value goes in an annotation beside it).
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_owned();
    }
    escaped(value, &[value])
}

/// The pod's host name, Docker's `{user}-{env}` as a DNS label.
pub fn hostname(user: &str, env: &str) -> String {
    let name = crate::backend::docker::hostname(user, env);
    if is_dns_label(&name) {
        name
    } else {
        sanitize(&name, MAX_LABEL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_dockers() {
        assert_eq!(pod_name("lab", "alice", "default"), "lab-alice.default");
        assert_eq!(pod_name("lab", "bob", "py.3"), "lab-bob.py.3");
        assert_eq!(claim_name("lab", "alice"), "lab-home-alice");
        assert_ne!(pod_name("lab", "a-b", "c"), pod_name("lab", "a", "b-c"));
    }

    #[test]
    fn other_names_are_escaped_valid_and_unique() {
        let cases = [
            ("lab", "_x", "default"),
            ("lab", "x_", "default"),
            ("lab", "x-", "default"),
            ("lab", "bob", "Web"),
            ("lab", "bob", "web"),
            ("lab", "bob", "py_3"),
            ("lab", "bob", "py-3"),
            ("lab", "bob", "a..b"),
            ("lab_x", "bob", "default"),
            ("lab", &"u".repeat(32), &"e".repeat(63)),
            (&"p".repeat(200), "bob", "default"),
        ];
        let mut names: Vec<String> = cases
            .iter()
            .map(|(p, u, e)| {
                let name = pod_name(p, u, e);
                assert!(is_dns_subdomain(&name), "{p} {u} {e}: {name}");
                assert_eq!(name, pod_name(p, u, e), "deterministic");
                name
            })
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "{names:?}");
        let escaped = pod_name("lab", "bob", "Web");
        assert!(escaped.starts_with("lab-bob-web-"), "{escaped}");
        assert!(!escaped.contains('.'), "{escaped}");
        assert!(escaped.len() <= 63);
    }

    #[test]
    fn claims_of_odd_users_are_valid_and_apart() {
        let a = claim_name("lab", "_x");
        let b = claim_name("lab", "x_");
        let c = claim_name("lab", "x");
        for name in [&a, &b, &c] {
            assert!(is_dns_subdomain(name), "{name}");
        }
        assert!(a.starts_with("lab-home.x-"), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(is_dns_subdomain(&claim_name("lab_1", "bob")));
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("alice"), "alice");
        assert_eq!(label_value("Web.v2"), "Web.v2");
        for odd in ["_x", "bob-", "a:b", &"a".repeat(64)] {
            let v = label_value(odd);
            assert!(is_label_value(&v) && !v.is_empty(), "{odd}: {v}");
            assert_ne!(v, odd);
        }
        assert_ne!(label_value("_x"), label_value("x_"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-a"));
    }

    #[test]
    fn host_names_are_dns_labels() {
        assert_eq!(hostname("bob", "gpu"), "bob-gpu");
        assert_eq!(hostname("_bob", "Py_3"), "bob-py-3");
        assert!(is_dns_label(&hostname(&"u".repeat(32), &"e".repeat(63))));
    }
}
