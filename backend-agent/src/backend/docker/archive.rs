//! The small tar archives the agent uploads through Docker's archive API: a home
//! directory with its owner and mode, and files such as /etc/passwd.
//!
//! Containers drop every capability, so root inside them cannot chown, and a privileged
//! exec cannot raise capabilities outside the container's bounding set. Docker's archive
//! upload is done by the daemon itself: extracting a directory entry onto the mounted
//! home volume sets its owner and mode without any process in the container, and costs
//! one HTTP request instead of a runc exec.

use std::time::{SystemTime, UNIX_EPOCH};

/// A tar stream holding only the directory `name/`, owned by uid:gid with `mode`.
pub fn directory(name: &str, uid: u32, gid: u32, mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = header(tar::EntryType::Directory, 0, mode, (uid, gid));
    builder.append_data(&mut header, format!("{name}/"), std::io::empty())?;
    builder.into_inner()
}

/// A tar of regular files, root-owned, mode 0644.
pub fn files(files: &[(&str, String)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, text) in files {
        let mut header = header(tar::EntryType::Regular, text.len() as u64, 0o644, (0, 0));
        builder.append_data(&mut header, name, text.as_bytes())?;
    }
    builder.into_inner()
}

/// A GNU header (ids of 2^21 and above fit, in base 256), stamped now.
fn header(kind: tar::EntryType, size: u64, mode: u32, (uid, gid): (u32, u32)) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    header.set_mtime(now);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, kind, mode, uid, gid, contents) of every entry.
    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, u32, u64, u64, Vec<u8>)> {
        use std::io::Read;
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn a_home_directory_entry() {
        let tar = directory("alice", 1000, 100, 0o700).unwrap();
        assert_eq!(
            entries(&tar),
            [(
                "alice/".to_owned(),
                tar::EntryType::Directory,
                0o700,
                1000,
                100,
                Vec::new()
            )]
        );
    }

    #[test]
    fn large_ids_fit() {
        let tar = directory("bob", 3_000_000, 1, 0o700).unwrap();
        let e = &entries(&tar)[0];
        assert_eq!((e.3, e.4), (3_000_000, 1));
    }

    #[test]
    fn files_are_root_owned() {
        let tar = files(&[("passwd", "root:x:0:0::/:/bin/sh\n".into())]).unwrap();
        assert_eq!(
            entries(&tar),
            [(
                "passwd".to_owned(),
                tar::EntryType::Regular,
                0o644,
                0,
                0,
                b"root:x:0:0::/:/bin/sh\n".to_vec()
            )]
        );
    }
}
