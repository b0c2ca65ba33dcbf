use super::*;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V bob@laptop";

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn krl(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = KRL_MAGIC.to_vec();
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&[0; 24]);
    string(&mut out, b"");
    string(&mut out, b"test");
    for (kind, body) in sections {
        out.push(*kind);
        string(&mut out, body);
    }
    out
}

#[test]
fn plain_lines_revoke_their_keys() {
    let key = PublicKey::from_openssh(KEY).unwrap();
    let text = format!("# revoked\n\n{KEY}\n");
    let revoked = Revoked::parse(text.as_bytes()).unwrap();
    assert!(revoked.key(key.key_data()).is_some());
    let err = Revoked::parse(b"ssh-ed25519 AAAA-not-base64\n").unwrap_err();
    assert!(err.starts_with("line 1:"), "{err}");
    assert!(Revoked::parse(b"").unwrap().key(key.key_data()).is_none());
}

#[test]
fn krl_sections_revoke_keys_by_blob_and_hash() {
    let key = PublicKey::from_openssh(KEY).unwrap();
    let b = blob(key.key_data());
    let mut explicit = Vec::new();
    string(&mut explicit, &b);
    let mut sha1 = Vec::new();
    string(&mut sha1, sha1::Sha1::digest(&b).as_slice());
    let mut sha256 = Vec::new();
    string(&mut sha256, key.fingerprint(HashAlg::Sha256).as_bytes());
    for section in [
        (SECTION_EXPLICIT_KEY, explicit),
        (SECTION_FINGERPRINT_SHA1, sha1),
        (SECTION_FINGERPRINT_SHA256, sha256),
    ] {
        let kind = section.0;
        let revoked = Revoked::parse(&krl(&[section])).unwrap();
        assert!(revoked.key(key.key_data()).is_some(), "section {kind}");
    }
    assert!(Revoked::parse(&krl(&[]))
        .unwrap()
        .key(key.key_data())
        .is_none());
}

#[test]
fn krl_certificate_sections_parse_serials_and_ids() {
    let mut body = Vec::new();
    string(&mut body, b""); // any CA
    string(&mut body, b"");
    let mut list = Vec::new();
    list.extend_from_slice(&7u64.to_be_bytes());
    body.push(CERT_SERIAL_LIST);
    string(&mut body, &list);
    let mut range = Vec::new();
    range.extend_from_slice(&100u64.to_be_bytes());
    range.extend_from_slice(&200u64.to_be_bytes());
    body.push(CERT_SERIAL_RANGE);
    string(&mut body, &range);
    let mut bitmap = Vec::new();
    bitmap.extend_from_slice(&1000u64.to_be_bytes());
    string(&mut bitmap, &[0x01, 0x00, 0x05]); // bits 0, 2 and 16
    body.push(CERT_SERIAL_BITMAP);
    string(&mut body, &bitmap);
    let mut ids = Vec::new();
    string(&mut ids, b"alice@2026");
    body.push(CERT_KEY_ID);
    string(&mut body, &ids);
    let revoked = Revoked::parse(&krl(&[(SECTION_CERTIFICATES, body)])).unwrap();
    let section = &revoked.certificates[0];
    assert_eq!(section.ca, None);
    assert_eq!(
        section.serials.iter().copied().collect::<Vec<_>>(),
        [7, 1000, 1002, 1016]
    );
    assert_eq!(section.ranges, [(100, 200)]);
    assert!(section.key_ids.contains("alice@2026"));
}

#[test]
fn broken_krls_are_refused_not_half_read() {
    let good = krl(&[(SECTION_EXPLICIT_KEY, Vec::new())]);
    for cut in KRL_MAGIC.len()..good.len() {
        // Every truncation but the one at a section boundary fails.
        let header_end = good.len() - 5;
        if cut == header_end {
            continue;
        }
        assert!(Revoked::parse(&good[..cut]).is_err(), "cut at {cut}");
    }
    assert!(Revoked::parse(&krl(&[(9, Vec::new())]))
        .unwrap_err()
        .contains("unknown type 9"));
    let mut bad_hash = Vec::new();
    string(&mut bad_hash, &[1, 2, 3]);
    assert!(Revoked::parse(&krl(&[(SECTION_FINGERPRINT_SHA256, bad_hash)])).is_err());
    let mut v2 = krl(&[]);
    v2[11] = 2;
    assert!(Revoked::parse(&v2).unwrap_err().contains("version 2"));
}
