//! One search result entry, read without trusting the server.
//!
//! `ldap3::SearchEntry::construct` panics on a malformed entry; a proxy
//! must not fall over because a directory (or whatever answers on its port)
//! sends one. This reads the same structure (RFC 4511 §4.5.2
//! SearchResultEntry: the DN, then attributes each with a set of values) and
//! answers `None` for anything else.

use ldap3::asn1::StructureTag;
use ldap3::ResultEntry;

/// `SearchResultEntry`'s application tag.
const SEARCH_RESULT_ENTRY: u64 = 4;

/// An entry's DN and the attributes asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// Its distinguished name.
    pub dn: String,
    /// (attribute name as the server spells it, values).
    pub attributes: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// Reads a search result entry; `None` for a referral or anything
    /// malformed.
    pub fn read(entry: ResultEntry) -> Option<Entry> {
        let mut parts = entry
            .0
            .match_id(SEARCH_RESULT_ENTRY)?
            .expect_constructed()?
            .into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut attributes = Vec::new();
        for attribute in parts.next()?.expect_constructed()? {
            attributes.push(read_attribute(attribute)?);
        }
        Some(Entry { dn, attributes })
    }

    /// The values of `name` (attribute names are case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values.iter().map(Vec::as_slice))
    }

    /// The values of `name` that are UTF-8 text.
    pub fn texts<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` as a number (`uidNumber`, `gidNumber`).
    pub fn number(&self, name: &str) -> Option<u32> {
        self.texts(name).next()?.trim().parse().ok()
    }
}

fn read_attribute(tag: StructureTag) -> Option<(String, Vec<Vec<u8>>)> {
    let mut parts = tag.expect_constructed()?.into_iter();
    let name = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let values = parts
        .next()?
        .expect_constructed()?
        .into_iter()
        .map(StructureTag::expect_primitive)
        .collect::<Option<Vec<_>>>()?;
    Some((name, values))
}

/// The value of a group DN's first RDN (`cn=cs101,ou=groups,…` → `cs101`);
/// `None` if it is not `attr=value,…`. Escaped characters are left as
/// written: a group name with them is not a valid one anyway.
pub fn first_rdn_value(dn: &str) -> Option<&str> {
    let (_, rest) = dn.split_once('=')?;
    let end = rest
        .char_indices()
        .find(|&(i, c)| (c == ',' || c == '+') && !rest[..i].ends_with('\\'))
        .map_or(rest.len(), |(i, _)| i);
    let value = rest[..end].trim();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use ldap3::asn1::{StructureTag, TagClass, PL};

    use super::*;

    fn primitive(bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn constructed(id: u64, class: TagClass, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    #[test]
    fn a_well_formed_entry_is_read_and_a_malformed_one_refused() {
        let attribute = constructed(
            16,
            TagClass::Universal,
            vec![
                primitive(b"uidNumber"),
                constructed(17, TagClass::Universal, vec![primitive(b"20001")]),
            ],
        );
        let good = constructed(
            4,
            TagClass::Application,
            vec![
                primitive(b"uid=carol,dc=lab"),
                constructed(16, TagClass::Universal, vec![attribute]),
            ],
        );
        let entry = Entry::read(ResultEntry::new(good)).unwrap();
        assert_eq!(entry.dn, "uid=carol,dc=lab");
        assert_eq!(entry.number("UIDNUMBER"), Some(20001));
        assert_eq!(entry.number("gidNumber"), None);
        // No attribute list, a DN that is not text, a referral: None, no panic.
        for bad in [
            constructed(4, TagClass::Application, vec![primitive(b"uid=x")]),
            constructed(
                4,
                TagClass::Application,
                vec![
                    primitive(&[0xff, 0xfe]),
                    constructed(16, TagClass::Universal, vec![]),
                ],
            ),
            constructed(19, TagClass::Application, vec![primitive(b"ldap://x")]),
            primitive(b"junk"),
        ] {
            assert_eq!(Entry::read(ResultEntry::new(bad)), None);
        }
    }

    #[test]
    fn a_group_dn_gives_its_first_value() {
        assert_eq!(first_rdn_value("cn=cs101,ou=groups,dc=x"), Some("cs101"));
        assert_eq!(first_rdn_value("CN=staff"), Some("staff"));
        assert_eq!(first_rdn_value("cn=a\\,b,dc=x"), Some("a\\,b"));
        assert_eq!(first_rdn_value("cn=,dc=x"), None);
        assert_eq!(first_rdn_value("nonsense"), None);
    }
}
