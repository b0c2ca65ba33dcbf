//! The SFTP requests, served on the real filesystem as the calling process.
//!
//! Requests arrive one after another on a single-threaded runtime and nothing else
//! runs beside them, so file system calls are made in place: handing them to another
//! thread would only add a hop to every read and write.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions, ReadDir};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use russh_sftp::extensions::{LimitsExtension, Statvfs};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as Entry, FileAttributes, Handle, Name, OpenFlags, Packet,
    Status, StatusCode, Version,
};
use russh_sftp::server::{Handler, StatusReply};

use crate::listing::{self, Names};

mod attrs;
mod extended;
mod paths;

use attrs::{attributes, set_attributes, statvfs_reply, Target};
use extended::{extended_reply, Args};
use paths::{expand_tilde, path, real_path, rename_no_replace};

/// Open files and directories one client may hold.
const MAX_HANDLES: usize = 256;
/// The largest SFTP message OpenSSH exchanges (and russh-sftp accepts).
const MAX_PACKET: u64 = 256 * 1024;
/// Largest read and write, leaving room for the message header (OpenSSH's figures).
const MAX_IO: u32 = 256 * 1024 - 1024;
/// Directory entries per READDIR reply.
const READDIR_BATCH: usize = 128;

/// Extensions announced in the VERSION reply, with their versions.
const EXTENSIONS: [(&str, &str); 7] = [
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
];

type Reply<T> = Result<T, StatusReply>;

enum Open {
    File(File),
    Dir {
        path: PathBuf,
        /// `None` once exhausted.
        entries: Option<ReadDir>,
        /// `.` and `..` come first, as readdir(3) gives them.
        dots_sent: bool,
    },
}

/// The handler: open handles and the container's user names.
pub struct Fs {
    handles: HashMap<String, Open>,
    next_handle: u64,
    names: Option<Names>,
    /// Dropped with the handler, which tells `main` the session is over.
    _done: tokio::sync::oneshot::Sender<()>,
}

impl Fs {
    pub fn new(done: tokio::sync::oneshot::Sender<()>) -> Fs {
        Fs {
            handles: HashMap::new(),
            next_handle: 0,
            names: None,
            _done: done,
        }
    }

    fn insert(&mut self, open: Open) -> Reply<String> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure
                .with_message(format!("too many open handles (at most {MAX_HANDLES})")));
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), open);
        Ok(handle)
    }

    fn file(&self, handle: &str) -> Reply<&File> {
        match self.handles.get(handle) {
            Some(Open::File(file)) => Ok(file),
            Some(Open::Dir { .. }) => Err(StatusCode::Failure.with_message("not a file handle")),
            None => Err(bad_handle()),
        }
    }

    fn read_dir_batch(&mut self, handle: &str) -> Reply<Vec<Entry>> {
        let names = self.names.get_or_insert_with(Names::load);
        let Some(Open::Dir {
            path,
            entries,
            dots_sent,
        }) = self.handles.get_mut(handle)
        else {
            return Err(bad_handle());
        };
        let now = listing::now();
        let mut batch = Vec::new();
        let entry = |name: String, meta: &Metadata| Entry {
            longname: names.long_name(&name, meta, now),
            filename: name,
            attrs: attributes(meta),
        };
        if !*dots_sent {
            *dots_sent = true;
            for dot in [".", ".."] {
                if let Ok(meta) = fs::symlink_metadata(path.join(dot)) {
                    batch.push(entry(dot.to_owned(), &meta));
                }
            }
        }
        while let Some(iter) = entries {
            if batch.len() >= READDIR_BATCH {
                break;
            }
            match iter.next() {
                Some(Ok(found)) => {
                    // An entry removed since the directory was read is skipped.
                    if let Ok(meta) = found.metadata() {
                        let name = found.file_name().to_string_lossy().into_owned();
                        batch.push(entry(name, &meta));
                    }
                }
                Some(Err(e)) => return Err(status(e)),
                None => *entries = None,
            }
        }
        if batch.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(batch)
    }
}

impl Handler for Fs {
    type Error = StatusReply;

    fn unimplemented(&self) -> StatusReply {
        StatusCode::OpUnsupported.into()
    }

    async fn init(&mut self, _version: u32, _ext: HashMap<String, String>) -> Reply<Version> {
        let mut version = Version::new();
        for (name, revision) in EXTENSIONS {
            version
                .extensions
                .insert(name.to_owned(), revision.to_owned());
        }
        Ok(version)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Reply<Handle> {
        let mut options = OpenOptions::from(pflags);
        options.mode(attrs.permissions.map_or(0o666, |p| p & 0o7777));
        let file = options.open(path(&filename)).map_err(status)?;
        let handle = self.insert(Open::File(file))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Reply<Status> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(bad_handle()),
        }
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Reply<Data> {
        let file = self.file(&handle)?;
        let mut data = vec![0; len.min(MAX_IO) as usize];
        let n = file.read_at(&mut data, offset).map_err(status)?;
        if n == 0 && !data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(n);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Reply<Status> {
        let file = self.file(&handle)?;
        file.write_all_at(&data, offset).map_err(status)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        let meta = fs::symlink_metadata(self::path(&path)).map_err(status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Reply<Attrs> {
        let meta = fs::metadata(self::path(&path)).map_err(status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Reply<Attrs> {
        let meta = match self.handles.get(&handle) {
            Some(Open::File(file)) => file.metadata(),
            Some(Open::Dir { path, .. }) => fs::metadata(path),
            None => return Err(bad_handle()),
        }
        .map_err(status)?;
        Ok(Attrs {
            id,
            attrs: attributes(&meta),
        })
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        set_attributes(Target::Path(self::path(&path)), &attrs)?;
        Ok(ok(id))
    }

    async fn fsetstat(&mut self, id: u32, handle: String, attrs: FileAttributes) -> Reply<Status> {
        let target = match self.handles.get(&handle) {
            Some(Open::File(file)) => Target::File(file),
            Some(Open::Dir { path, .. }) => Target::Path(path.clone()),
            None => return Err(bad_handle()),
        };
        set_attributes(target, &attrs)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Reply<Handle> {
        let path = self::path(&path);
        let entries = fs::read_dir(&path).map_err(status)?;
        let handle = self.insert(Open::Dir {
            path,
            entries: Some(entries),
            dots_sent: false,
        })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Reply<Name> {
        let files = self.read_dir_batch(&handle)?;
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Reply<Status> {
        fs::remove_file(path(&filename)).map_err(status)?;
        Ok(ok(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> Reply<Status> {
        fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o777, |p| p & 0o7777))
            .create(self::path(&path))
            .map_err(status)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Reply<Status> {
        fs::remove_dir(self::path(&path)).map_err(status)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Reply<Name> {
        let resolved = real_path(&self::path(&path)).map_err(status)?;
        Ok(one_name(id, &resolved))
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Reply<Status> {
        rename_no_replace(&path(&oldpath), &path(&newpath)).map_err(status)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Reply<Name> {
        let target = fs::read_link(self::path(&path)).map_err(status)?;
        Ok(one_name(id, &target))
    }

    /// OpenSSH sends the two paths in the reverse of the draft's order: the link's
    /// target first, then the link to create. Every client in use follows OpenSSH.
    async fn symlink(&mut self, id: u32, linkpath: String, targetpath: String) -> Reply<Status> {
        let (target, link) = (linkpath, targetpath);
        std::os::unix::fs::symlink(path(&target), path(&link)).map_err(status)?;
        Ok(ok(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Reply<Packet> {
        let mut args = Args(&data);
        let done = Packet::Status(ok(id));
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let (old, new) = (args.path()?, args.path()?);
                fs::rename(old, new).map_err(status)?;
                Ok(done)
            }
            "hardlink@openssh.com" => {
                let (old, new) = (args.path()?, args.path()?);
                fs::hard_link(old, new).map_err(status)?;
                Ok(done)
            }
            "fsync@openssh.com" => {
                self.file(&args.string()?)?.sync_all().map_err(status)?;
                Ok(done)
            }
            "statvfs@openssh.com" => {
                let path = CString::new(args.path()?.as_os_str().as_bytes())
                    .map_err(|_| StatusCode::BadMessage)?;
                let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
                // SAFETY: a valid C string and room for the result.
                let rc = unsafe { libc::statvfs(path.as_ptr(), vfs.as_mut_ptr()) };
                // SAFETY: statvfs filled it in when it returned 0.
                let vfs = (rc == 0)
                    .then(|| unsafe { vfs.assume_init() })
                    .ok_or_else(|| status(io::Error::last_os_error()))?;
                extended_reply(id, &statvfs_reply(&vfs))
            }
            "fstatvfs@openssh.com" => {
                let fd = self.file(&args.string()?)?.as_raw_fd();
                let mut vfs = std::mem::MaybeUninit::<libc::statvfs>::uninit();
                // SAFETY: an open descriptor and room for the result.
                let rc = unsafe { libc::fstatvfs(fd, vfs.as_mut_ptr()) };
                // SAFETY: fstatvfs filled it in when it returned 0.
                let vfs = (rc == 0)
                    .then(|| unsafe { vfs.assume_init() })
                    .ok_or_else(|| status(io::Error::last_os_error()))?;
                extended_reply(id, &statvfs_reply(&vfs))
            }
            "limits@openssh.com" => extended_reply(
                id,
                &LimitsExtension {
                    max_packet_len: MAX_PACKET,
                    max_read_len: MAX_IO.into(),
                    max_write_len: MAX_IO.into(),
                    max_open_handles: MAX_HANDLES as u64,
                },
            ),
            "expand-path@openssh.com" => {
                let expanded = expand_tilde(&args.string()?)?;
                let resolved = real_path(&path(&expanded)).map_err(status)?;
                Ok(Packet::Name(one_name(id, &resolved)))
            }
            _ => Err(StatusCode::OpUnsupported.into()),
        }
    }
}

/// A NAME reply holding one path (realpath, readlink, expand-path), without
/// attributes, as OpenSSH's server sends it.
fn one_name(id: u32, path: &Path) -> Name {
    let name = path.to_string_lossy().into_owned();
    Name {
        id,
        files: vec![Entry {
            longname: name.clone(),
            filename: name,
            attrs: FileAttributes::default(),
        }],
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn bad_handle() -> StatusReply {
    StatusCode::Failure.with_message("invalid handle")
}

/// NotFound and PermissionDenied have their own codes; anything else is a failure
/// carrying the system's message.
fn status(e: io::Error) -> StatusReply {
    match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile.with_message("No such file"),
        io::ErrorKind::PermissionDenied => {
            StatusCode::PermissionDenied.with_message("Permission denied")
        }
        _ => {
            let text = e.to_string();
            // "File exists (os error 17)" → "File exists"
            let text = match text.rfind(" (os error ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            StatusCode::Failure.with_message(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_status_codes() {
        let code = |e: io::Error| status(e).status_code;
        assert_eq!(code(io::ErrorKind::NotFound.into()), StatusCode::NoSuchFile);
        assert_eq!(
            code(io::ErrorKind::PermissionDenied.into()),
            StatusCode::PermissionDenied
        );
        let exists = status(io::Error::from_raw_os_error(libc::EEXIST));
        assert_eq!(exists.status_code, StatusCode::Failure);
        assert_eq!(exists.error_message.as_deref(), Some("File exists"));
    }

    #[test]
    fn extended_arguments_are_ssh_strings() {
        let data = [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 9, b'x'];
        let mut args = Args(&data);
        assert_eq!(args.string().unwrap(), "ab");
        assert_eq!(args.string().unwrap(), "");
        assert!(args.string().is_err(), "length beyond the data");
    }

    #[test]
    fn tilde_expands_to_home() {
        assert_eq!(expand_tilde("/abs").unwrap(), "/abs");
        assert_eq!(
            expand_tilde("~root/x").unwrap(),
            format!(
                "{}/x",
                Names::home_of("root").unwrap().trim_end_matches('/')
            )
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn handler() -> Fs {
        Fs::new(tokio::sync::oneshot::channel().0)
    }

    #[test]
    fn plain_rename_does_not_replace_posix_rename_does() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        fs::write(p("a"), b"a").unwrap();
        fs::write(p("b"), b"b").unwrap();
        let mut fs_ = handler();
        let refused = block_on(fs_.rename(1, p("a"), p("b"))).unwrap_err();
        assert_eq!(refused.status_code, StatusCode::Failure);
        assert_eq!(fs::read(p("b")).unwrap(), b"b");
        block_on(fs_.rename(2, p("a"), p("c"))).unwrap();
        assert_eq!(fs::read(p("c")).unwrap(), b"a");
        let mut data = Vec::new();
        for arg in [p("c"), p("b")] {
            data.extend_from_slice(&(arg.len() as u32).to_be_bytes());
            data.extend_from_slice(arg.as_bytes());
        }
        block_on(fs_.extended(3, "posix-rename@openssh.com".into(), data)).unwrap();
        assert_eq!(fs::read(p("b")).unwrap(), b"a");
        assert!(!dir.path().join("c").exists());
    }

    #[test]
    fn readlink_gives_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("some/where", &link).unwrap();
        let name = block_on(handler().readlink(1, link.to_str().unwrap().into())).unwrap();
        assert_eq!(name.files[0].filename, "some/where");
    }

    #[test]
    fn open_handles_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let path = path.to_str().unwrap().to_owned();
        let mut fs_ = handler();
        let open = |fs_: &mut Fs| {
            block_on(fs_.open(1, path.clone(), OpenFlags::READ, FileAttributes::default()))
        };
        let handles: Vec<_> = (0..MAX_HANDLES).map(|_| open(&mut fs_).unwrap()).collect();
        assert_eq!(open(&mut fs_).unwrap_err().status_code, StatusCode::Failure);
        block_on(fs_.close(2, handles[0].handle.clone())).unwrap();
        let again = open(&mut fs_).unwrap();
        let data = block_on(fs_.read(3, again.handle.clone(), 0, u32::MAX)).unwrap();
        assert_eq!(data.data, b"x");
        let eof = block_on(fs_.read(4, again.handle, 1, 10)).unwrap_err();
        assert_eq!(eof.status_code, StatusCode::Eof);
        let gone = block_on(fs_.read(5, handles[0].handle.clone(), 0, 1)).unwrap_err();
        assert_eq!(gone.status_code, StatusCode::Failure, "closed handle");
    }
}
