//! What the authenticators read from outside: the operator's revoked-keys file
//! (often written by tools, sometimes truncated) and the login name that goes
//! into an LDAP search filter.

use labssh_proxy::untrusted::{ldap_filter as fill, parse_revoked};

/// A revoked-keys file, KRL or key lines: parsed or refused with a reason,
/// never a panic (a panic would stop every login on the replica).
pub fn revoked_list(data: &[u8]) {
    if let Err(why) = parse_revoked(data) {
        assert!(!why.is_empty(), "a refusal says why");
    }
}

/// A login name in `(uid={user})`: the filter stays one assertion, none of
/// RFC 4515's special characters gets through unescaped, and unescaping the
/// value gives back exactly the name.
pub fn ldap_filter(data: &[u8]) {
    let Ok(user) = std::str::from_utf8(data) else {
        return;
    };
    let filter = fill("(uid={user})", user);
    let value = filter
        .strip_prefix("(uid=")
        .and_then(|f| f.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{user:?} broke the filter: {filter:?}"));
    assert!(
        !value.contains(['(', ')', '*', '\0']),
        "{user:?} left a special character in {filter:?}"
    );
    let mut back = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = value
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("{user:?}: a lone backslash in {filter:?}"));
            back.push(u8::from_str_radix(hex, 16).expect("two hex digits after a backslash"));
            i += 3;
        } else {
            back.push(bytes[i]);
            i += 1;
        }
    }
    assert_eq!(back, user.as_bytes(), "{user:?} did not round-trip");
}
