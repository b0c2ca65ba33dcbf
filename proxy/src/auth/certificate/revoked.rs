//! `auth.revoked_keys`: keys and certificates refused whatever else says, as
//! sshd's `RevokedKeys`. The file is either an OpenSSH key revocation list
//! (KRL, what `ssh-keygen -k` writes; told apart by its magic) or public
//! keys, one per line (`#` comments and blank lines allowed).
//!
//! A KRL (OpenSSH's PROTOCOL.krl) is a header, then sections of one type
//! byte and one length-prefixed body each:
//!
//! - certificates (1): a CA key (empty: any CA), then sub-sections of
//!   serial lists (0x20), serial ranges (0x21), serial bitmaps (0x22) and
//!   key ids (0x23);
//! - explicit keys (2): key blobs;
//! - SHA-1 (3) and SHA-256 (5) hashes of key blobs (`ssh-keygen -k key.pub`
//!   revokes a plain key by its SHA-1 hash);
//! - signatures (4): last in the file. They are not checked: the file is
//!   trusted by where it lies (like `trusted_user_ca_keys`), as sshd does.
//!
//! Anything else, a truncated section, or trailing bytes make the file
//! invalid; the caller then keeps the previous version in force, so a
//! half-written list never un-revokes anything.

use std::collections::{BTreeSet, HashSet};

use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Certificate, HashAlg, PublicKey};
use sha1::Digest;

/// The first 8 bytes of every KRL: "SSHKRL\n\0".
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The only KRL format version there is.
const KRL_FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;

/// Serials one bitmap may revoke: a bitmap is bounded by the file's size,
/// this bounds what it expands to (a 1 MiB KRL's worth).
const MAX_BITMAP_SERIALS: usize = 8 << 20;

/// What one CA's certificates have revoked, by serial or key id.
#[derive(Debug, Default, PartialEq, Eq)]
struct CaRevocations {
    /// The CA's key blob; `None` for any CA.
    ca: Option<Vec<u8>>,
    /// Single serials (lists and bitmaps).
    serials: BTreeSet<u64>,
    /// Inclusive ranges.
    ranges: Vec<(u64, u64)>,
    /// Key ids.
    key_ids: HashSet<String>,
}

/// One version of the revoked-keys file, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Revoked {
    /// Key blobs (plain keys, never certificates).
    keys: HashSet<Vec<u8>>,
    /// SHA-1 hashes of key blobs.
    sha1: HashSet<Vec<u8>>,
    /// SHA-256 hashes of key blobs.
    sha256: HashSet<Vec<u8>>,
    /// Certificates by CA.
    certificates: Vec<CaRevocations>,
}

/// The wire encoding of a key: what KRLs list and hash.
fn blob(key: &KeyData) -> Vec<u8> {
    // Encoding a key already decoded cannot fail; an empty blob matches
    // nothing a KRL lists.
    key.encode_vec().unwrap_or_default()
}

impl Revoked {
    /// Parses the file's contents, a KRL or public key lines.
    pub fn parse(bytes: &[u8]) -> Result<Revoked, String> {
        if bytes.starts_with(KRL_MAGIC) {
            parse_krl(bytes)
        } else {
            parse_lines(bytes)
        }
    }

    /// Why a plain key is refused, if it is.
    pub fn key(&self, key: &KeyData) -> Option<String> {
        let blob = blob(key);
        if self.keys.contains(&blob) {
            return Some("the key is revoked (listed)".into());
        }
        if self.sha1.contains(sha1::Sha1::digest(&blob).as_slice()) {
            return Some("the key is revoked (by SHA-1 hash)".into());
        }
        let sha256 = key.fingerprint(HashAlg::Sha256);
        if self.sha256.contains(sha256.as_bytes()) {
            return Some("the key is revoked (by SHA-256 hash)".into());
        }
        None
    }

    /// Why a certificate is refused, if it is: its key, its CA's key, its
    /// serial or its key id is listed.
    pub fn certificate(&self, cert: &Certificate) -> Option<String> {
        if let Some(why) = self.key(cert.public_key()) {
            return Some(format!("certificate: {why}"));
        }
        if let Some(why) = self.key(cert.signature_key()) {
            return Some(format!("certificate authority: {why}"));
        }
        let ca = blob(cert.signature_key());
        let serial = cert.serial();
        for section in &self.certificates {
            if section.ca.as_ref().is_some_and(|c| *c != ca) {
                continue;
            }
            // As OpenSSH: serial 0 is what a CA writes when it sets none,
            // so it is never revoked by serial.
            if serial != 0
                && (section.serials.contains(&serial)
                    || section
                        .ranges
                        .iter()
                        .any(|&(lo, hi)| lo <= serial && serial <= hi))
            {
                return Some(format!("certificate serial {serial} is revoked"));
            }
            if section.key_ids.contains(cert.key_id()) {
                return Some(format!("certificate key id {:?} is revoked", cert.key_id()));
            }
        }
        None
    }
}

/// Public keys, one per line, as `authorized_keys` writes them (options
/// before the key are not allowed: this is a list of keys, not of rules).
fn parse_lines(bytes: &[u8]) -> Result<Revoked, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "neither an OpenSSH KRL nor text with one public key a line".to_owned())?;
    let mut revoked = Revoked::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PublicKey::from_openssh(line)
            .map_err(|e| format!("line {}: not an OpenSSH public key: {e}", i + 1))?;
        let data = match key.key_data().certificate() {
            // A certificate line revokes the key it certifies.
            Some(cert) => cert.public_key().clone(),
            None => key.key_data().clone(),
        };
        revoked.keys.insert(blob(&data));
    }
    Ok(revoked)
}

/// A cursor over SSH wire encoding, every read bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    /// A length-prefixed string.
    fn string(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

fn parse_krl(bytes: &[u8]) -> Result<Revoked, String> {
    let mut r = Reader {
        rest: &bytes[KRL_MAGIC.len()..],
    };
    let header = |e: String| format!("KRL header: {e}");
    let version = r.u32().map_err(header)?;
    if version != KRL_FORMAT_VERSION {
        return Err(format!(
            "KRL format version {version}; only {KRL_FORMAT_VERSION} is known"
        ));
    }
    // krl_version, generated_date, flags, reserved, comment.
    r.u64().map_err(header)?;
    r.u64().map_err(header)?;
    r.u64().map_err(header)?;
    r.string().map_err(header)?;
    r.string().map_err(header)?;
    let mut revoked = Revoked::default();
    while !r.is_empty() {
        let kind = r.u8()?;
        let body = r.string().map_err(|e| format!("KRL section {kind}: {e}"))?;
        let mut s = Reader { rest: body };
        let in_section = |e: String| format!("KRL section {kind}: {e}");
        match kind {
            SECTION_CERTIFICATES => revoked
                .certificates
                .push(parse_certificates(&mut s).map_err(in_section)?),
            SECTION_EXPLICIT_KEY | SECTION_FINGERPRINT_SHA1 | SECTION_FINGERPRINT_SHA256 => {
                let (set, len) = match kind {
                    SECTION_EXPLICIT_KEY => (&mut revoked.keys, None),
                    SECTION_FINGERPRINT_SHA1 => (&mut revoked.sha1, Some(20)),
                    _ => (&mut revoked.sha256, Some(32)),
                };
                while !s.is_empty() {
                    let item = s.string().map_err(in_section)?;
                    if len.is_some_and(|l| l != item.len()) {
                        return Err(in_section(format!("a hash of {} bytes", item.len())));
                    }
                    set.insert(item.to_vec());
                }
            }
            // Signatures come last; what follows is more of them.
            SECTION_SIGNATURE => break,
            other => return Err(format!("KRL section of unknown type {other}")),
        }
    }
    Ok(revoked)
}

/// The body of a certificates section.
fn parse_certificates(s: &mut Reader<'_>) -> Result<CaRevocations, String> {
    let ca = s.string()?;
    let mut section = CaRevocations {
        ca: (!ca.is_empty()).then(|| ca.to_vec()),
        ..Default::default()
    };
    s.string()?; // reserved
    while !s.is_empty() {
        let kind = s.u8()?;
        let mut body = Reader { rest: s.string()? };
        match kind {
            CERT_SERIAL_LIST => {
                while !body.is_empty() {
                    section.serials.insert(body.u64()?);
                }
            }
            CERT_SERIAL_RANGE => {
                let (lo, hi) = (body.u64()?, body.u64()?);
                if lo > hi || !body.is_empty() {
                    return Err(format!("a bad serial range {lo}-{hi}"));
                }
                section.ranges.push((lo, hi));
            }
            CERT_SERIAL_BITMAP => {
                let offset = body.u64()?;
                // An mpint: big-endian, bit 0 of the last byte is `offset`.
                let bits = body.string()?;
                if !body.is_empty() {
                    return Err("bytes after a serial bitmap".into());
                }
                for (i, byte) in bits.iter().rev().enumerate() {
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            if section.serials.len() >= MAX_BITMAP_SERIALS {
                                return Err("a serial bitmap too large".into());
                            }
                            let serial = offset
                                .checked_add((i * 8 + bit) as u64)
                                .ok_or("a serial bitmap past the last serial")?;
                            section.serials.insert(serial);
                        }
                    }
                }
            }
            CERT_KEY_ID => {
                while !body.is_empty() {
                    let id = body.string()?;
                    let id = std::str::from_utf8(id).map_err(|_| "a key id not UTF-8")?;
                    section.key_ids.insert(id.to_owned());
                }
            }
            other => {
                return Err(format!(
                    "certificate sub-section of unknown type {other:#x}"
                ))
            }
        }
    }
    Ok(section)
}

#[cfg(test)]
mod tests;
