//! Search filters with the student's login name in them.
//!
//! The name comes from the network. Put into a filter unescaped, `*)(uid=*`
//! turns `(uid={user})` into `(uid=*)(uid=*)`: a search that finds everyone,
//! and with `(|(uid=` tricks, a bind as whoever the attacker picks. RFC 4515
//! §3 says which characters of an assertion value must be written as `\XX`:
//! `*`, `(`, `)`, `\` and NUL. Escaping exactly those, every byte of the name
//! is matched literally, whatever the template around it.

/// The login name's placeholder in `user_filter` and `group_filter`.
pub const USER: &str = "{user}";
/// The entry's DN's placeholder in `group_filter` (for `member={dn}`).
pub const DN: &str = "{dn}";

/// `value` as an RFC 4515 assertion value: the five special characters as
/// `\XX`, everything else as is.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => out.push_str(&format!("\\{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `template` with each placeholder replaced by its escaped value, in one
/// pass over the template, so a value cannot make another placeholder.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(&escape(value));
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_special_characters_are_escaped_and_nothing_else() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape("a\\b\0c"), "a\\5cb\\00c");
        // Not special in a value: '=', '&', '|', '!', spaces, non-ASCII.
        assert_eq!(escape("x=&|! é"), "x=&|! é");
    }

    #[test]
    fn an_injection_stays_one_equality_match() {
        let filter = fill(
            "(&(objectClass=posixAccount)(uid={user}))",
            &[(USER, "*)(uid=*")],
        );
        assert_eq!(
            filter,
            "(&(objectClass=posixAccount)(uid=\\2a\\29\\28uid=\\2a))"
        );
        // It parses as the template's two conditions, nothing more: the
        // server sees one literal uid to compare.
        assert!(ldap3::parse_filter(&filter).is_ok());
        let unescaped = "(&(objectClass=posixAccount)(uid=*)(uid=*))";
        assert_ne!(filter, unescaped);
        // A value cannot smuggle in another placeholder.
        let filter = fill(
            "(|(memberUid={user})(member={dn}))",
            &[(USER, "{dn}"), (DN, "uid=a,dc=x")],
        );
        assert_eq!(filter, "(|(memberUid={dn})(member=uid=a,dc=x))");
    }
}
