//! A one-entry tar archive that gives a home directory its owner and mode.
//!
//! Containers drop every capability, so root inside them cannot chown, and a privileged
//! exec cannot raise capabilities outside the container's bounding set. Docker's archive
//! upload is done by the daemon itself: extracting a directory entry with `copyUIDGID`
//! onto the mounted home volume sets its owner and mode without any process in the
//! container, and costs one HTTP request instead of a runc exec.

use std::time::{SystemTime, UNIX_EPOCH};

/// Tar block size.
const BLOCK: usize = 512;

/// A tar stream holding only the directory `name/`, owned by uid:gid with `mode`.
pub fn directory(name: &str, uid: u32, gid: u32, mode: u32) -> Vec<u8> {
    let mut header = [0u8; BLOCK];
    let path = format!("{name}/");
    let path = path.as_bytes();
    header[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
    octal(&mut header[100..108], mode as u64);
    numeric(&mut header[108..116], uid as u64);
    numeric(&mut header[116..124], gid as u64);
    octal(&mut header[124..136], 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    octal(&mut header[136..148], now);
    header[156] = b'5'; // directory
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| b as u64).sum();
    let field = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(field.as_bytes());

    let mut archive = header.to_vec();
    archive.extend_from_slice(&[0u8; 2 * BLOCK]); // end-of-archive marker
    archive
}

/// Zero-padded octal digits followed by a NUL, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(digits.as_bytes());
}

/// Octal when it fits, else GNU base-256 (for ids of 2^21 and above).
fn numeric(field: &mut [u8], value: u64) {
    if value < 1 << (3 * (field.len() - 1)) {
        octal(field, value);
    } else {
        let bytes = value.to_be_bytes();
        field.fill(0);
        let n = field.len();
        field[n - bytes.len()..].copy_from_slice(&bytes);
        field[0] |= 0x80;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let tar = directory("alice", 1000, 100, 0o700);
        assert_eq!(tar.len(), 3 * BLOCK);
        assert_eq!(&tar[..6], b"alice/");
        assert_eq!(&tar[100..108], b"0000700\0");
        assert_eq!(&tar[108..116], b"0001750\0");
        assert_eq!(&tar[116..124], b"0000144\0");
        assert_eq!(tar[156], b'5');
        let stored = u64::from_str_radix(std::str::from_utf8(&tar[148..154]).unwrap(), 8).unwrap();
        let mut copy = tar[..BLOCK].to_vec();
        copy[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, copy.iter().map(|&b| b as u64).sum::<u64>());
    }

    #[test]
    fn large_ids_use_base_256() {
        let tar = directory("bob", 3_000_000, 1, 0o700);
        assert_eq!(tar[108], 0x80);
        assert_eq!(&tar[112..116], &3_000_000u32.to_be_bytes());
    }
}
