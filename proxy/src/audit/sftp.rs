//! The SFTP requests that change files, read off the client's side of an `sftp`
//! subsystem channel as it passes (russh-sftp decodes them), for the audit log:
//! opening a file for writing, removing, renaming, making and removing directories,
//! changing attributes and making links, each with its path. Never a byte of a
//! file: WRITE packets and everything else are skipped by their length, unread.

use bytes::{Buf, Bytes, BytesMut};
use russh_sftp::protocol::{OpenFlags, Packet};

/// Requests larger than this are not audited (no path is this long): skipped.
const MAX_AUDITED: usize = 64 * 1024;
/// The request types worth decoding (SSH_FXP_OPEN, SETSTAT, REMOVE, MKDIR,
/// RMDIR, RENAME, SYMLINK, EXTENDED: OpenSSH's client renames with
/// `posix-rename@openssh.com` and links with `hardlink@openssh.com`).
const AUDITED_TYPES: [u8; 8] = [3, 9, 13, 14, 15, 18, 20, 200];

/// One change a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `write`, `remove`, `rename`, `mkdir`, `rmdir`, `setstat`, `symlink`.
    pub op: &'static str,
    /// The path it names.
    pub path: String,
    /// The second path of a rename (the new name) or a symlink (its target).
    pub to: Option<String>,
}

/// Reads the client's SFTP stream in whatever chunks it comes.
#[derive(Default)]
pub struct Tap {
    /// Bytes of the packet being read (its length first).
    pending: BytesMut,
    /// Bytes still to skip of a packet not worth reading.
    skip: usize,
}

impl Tap {
    /// The changes completed by `data`.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Change> {
        let mut changes = Vec::new();
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            // The length and the type decide whether to keep the packet.
            let need_head = 5usize.saturating_sub(self.pending.len());
            if need_head > 0 {
                let n = need_head.min(data.len());
                self.pending.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.pending.len() < 5 {
                    continue;
                }
            }
            let len = u32::from_be_bytes(self.pending[..4].try_into().unwrap()) as usize;
            let kind = self.pending[4];
            if len == 0 || len > MAX_AUDITED || !AUDITED_TYPES.contains(&kind) {
                // What is left of it after the type byte.
                self.skip = len.saturating_sub(1);
                self.pending.clear();
                continue;
            }
            let want = 4 + len;
            let n = (want - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == want {
                let mut packet = self.pending.split().freeze();
                packet.advance(4);
                if let Some(change) = change(packet) {
                    changes.push(change);
                }
            }
        }
        changes
    }
}

fn change(mut packet: Bytes) -> Option<Change> {
    let one = |op, path: String| Some(Change { op, path, to: None });
    match Packet::try_from(&mut packet).ok()? {
        Packet::Open(open) => {
            let writes =
                OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE;
            if open.pflags.intersects(writes) {
                one("write", open.filename)
            } else {
                None
            }
        }
        Packet::Remove(r) => one("remove", r.filename),
        Packet::MkDir(m) => one("mkdir", m.path),
        Packet::RmDir(r) => one("rmdir", r.path),
        Packet::SetStat(s) => one("setstat", s.path),
        Packet::Rename(r) => Some(Change {
            op: "rename",
            path: r.oldpath,
            to: Some(r.newpath),
        }),
        Packet::Symlink(s) => Some(Change {
            op: "symlink",
            path: s.linkpath,
            to: Some(s.targetpath),
        }),
        Packet::Extended(e) => {
            let op = match e.request.as_str() {
                "posix-rename@openssh.com" => "rename",
                russh_sftp::extensions::HARDLINK => "hardlink",
                _ => return None,
            };
            let mut data = &e.data[..];
            let (path, to) = (ssh_string(&mut data)?, ssh_string(&mut data)?);
            Some(Change {
                op,
                path,
                to: Some(to),
            })
        }
        _ => None,
    }
}

/// One length-prefixed string off the front of `data`.
fn ssh_string(data: &mut &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let text = data.get(4..4 + len)?;
    let text = String::from_utf8_lossy(text).into_owned();
    *data = &data[4 + len..];
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet: length, type, id, then `fields` (strings length-prefixed, u32s as
    /// they are).
    fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![kind, 0, 0, 0, 7];
        for f in fields {
            body.extend_from_slice(f);
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    #[test]
    fn changes_are_found_in_any_chunking_and_file_data_is_skipped() {
        let no_attrs = 0u32.to_be_bytes();
        let mut stream = Vec::new();
        // OPEN for writing, a large WRITE (skipped unread), OPEN for reading,
        // RENAME, REMOVE.
        stream.extend(packet(
            3,
            &[
                &string("/home/alice/a.txt"),
                &0x1au32.to_be_bytes(),
                &no_attrs,
            ],
        ));
        stream.extend(packet(
            6,
            &[
                &string("h"),
                &0u64.to_be_bytes(),
                &string(&"x".repeat(100_000)),
            ],
        ));
        stream.extend(packet(
            3,
            &[&string("/etc/motd"), &1u32.to_be_bytes(), &no_attrs],
        ));
        stream.extend(packet(
            18,
            &[&string("/home/alice/a.txt"), &string("/home/alice/b.txt")],
        ));
        stream.extend(packet(13, &[&string("/home/alice/b.txt")]));
        stream.extend(packet(
            200,
            &[
                &string("posix-rename@openssh.com"),
                &string("/home/alice/c"),
                &string("/home/alice/d"),
            ],
        ));
        stream.extend(packet(200, &[&string("statvfs@openssh.com"), &string("/")]));
        let want = vec![
            Change {
                op: "write",
                path: "/home/alice/a.txt".into(),
                to: None,
            },
            Change {
                op: "rename",
                path: "/home/alice/a.txt".into(),
                to: Some("/home/alice/b.txt".into()),
            },
            Change {
                op: "remove",
                path: "/home/alice/b.txt".into(),
                to: None,
            },
            Change {
                op: "rename",
                path: "/home/alice/c".into(),
                to: Some("/home/alice/d".into()),
            },
        ];
        for chunk in [1, 3, 7, 4096, stream.len()] {
            let mut tap = Tap::default();
            let got: Vec<Change> = stream.chunks(chunk).flat_map(|c| tap.feed(c)).collect();
            assert_eq!(got, want, "chunks of {chunk}");
            assert!(
                tap.pending.capacity() <= MAX_AUDITED + 8,
                "buffered {}",
                tap.pending.capacity()
            );
        }
    }

    #[test]
    fn garbage_is_skipped_without_panicking() {
        let mut tap = Tap::default();
        assert!(tap.feed(&[0, 0, 0, 5, 3, 1, 2, 3, 4]).is_empty());
        assert!(tap.feed(&[0xff; 64]).is_empty());
    }
}
