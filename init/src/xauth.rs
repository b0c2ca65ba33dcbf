//! `labssh-init --xauth DISPLAY PROTOCOL COOKIE -- COMMAND...`: installs the X11
//! cookie of an `ssh -X` session for the student, then becomes COMMAND. The agent
//! starts X11 sessions this way, as the student, as sshd runs xauth before the shell.
//!
//! With the image's `xauth` the entry is added as sshd adds it (`add unix:N.S`);
//! without one it is written into `$XAUTHORITY` (else `~/.Xauthority`) directly, in
//! the file format libXau reads, replacing any older entry for the same display and
//! locked the way libXau locks it, so a concurrent xauth never loses an entry.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// libXau's family of a display on this host, named by the hostname.
const FAMILY_LOCAL: u16 = 256;
/// How long to wait for another writer's lock.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// A lock older than this was left by a writer that died.
const STALE_LOCK: Duration = Duration::from_secs(10);

/// What `--xauth` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `N` or `N.S`, as in DISPLAY after the colon.
    pub display: String,
    /// e.g. `MIT-MAGIC-COOKIE-1`.
    pub protocol: String,
    /// The cookie in hex.
    pub cookie: String,
    /// What to run afterwards.
    pub command: Vec<OsString>,
}

/// Installs the cookie (a failure is told on stderr: the session still starts, its
/// X clients are refused) and execs the command; returns only if that fails.
pub fn run(request: Request) -> i32 {
    if let Err(message) = install(&request) {
        eprintln!("labssh: X11 forwarding: the cookie could not be installed: {message}");
    }
    let Some((program, args)) = request.command.split_first() else {
        return 0;
    };
    let e = Command::new(program).args(args).exec();
    eprintln!("labssh: cannot run {}: {e}", program.to_string_lossy());
    if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

fn install(request: &Request) -> Result<(), String> {
    let cookie = decode_hex(&request.cookie)?;
    let number = display_number(&request.display)?;
    if let Some(xauth) = find_in_path("xauth") {
        let status = Command::new(&xauth)
            .args(["-q", "add"])
            .arg(format!("unix:{}", request.display))
            .args([&request.protocol, &request.cookie])
            .status();
        match status {
            Ok(s) if s.success() => return Ok(()),
            Ok(s) => eprintln!("labssh: xauth failed ({s}); writing the entry itself"),
            Err(e) => eprintln!("labssh: xauth did not run ({e}); writing the entry itself"),
        }
    }
    let file = authority_file().ok_or("neither XAUTHORITY nor HOME is set")?;
    let entry = Entry {
        family: FAMILY_LOCAL,
        address: hostname()?.into_bytes(),
        number: number.into_bytes(),
        name: request.protocol.clone().into_bytes(),
        data: cookie,
    };
    write_entry(&file, entry).map_err(|e| format!("{}: {e}", file.display()))
}

/// N of `N` or `N.S`.
fn display_number(display: &str) -> Result<String, String> {
    let number = display.split('.').next().unwrap_or_default();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{display:?} is not a display number"));
    }
    Ok(number.to_owned())
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("the cookie {hex:?} is not hex");
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

fn authority_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("XAUTHORITY").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| Path::new(&home).join(".Xauthority"))
}

fn hostname() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return Err(format!("gethostname: {}", io::Error::last_os_error()));
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// One entry of an X authority file: five big-endian length-prefixed fields but the
/// first, a bare 16-bit family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub family: u16,
    pub address: Vec<u8>,
    pub number: Vec<u8>,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.family.to_be_bytes());
        for field in [&self.address, &self.number, &self.name, &self.data] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
    }

    /// The same display: libXau takes the first entry that matches, so an older one
    /// for it must go.
    fn same_display(&self, other: &Entry) -> bool {
        self.family == other.family && self.address == other.address && self.number == other.number
    }
}

/// The entries of `bytes`; a truncated tail is dropped, as libXau stops there.
pub fn parse(mut bytes: &[u8]) -> Vec<Entry> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn field(bytes: &mut &[u8]) -> Option<Vec<u8>> {
        let len = take(bytes, 2)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        Some(take(bytes, len)?.to_vec())
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let Some(entry) = (|| {
            let family = take(&mut bytes, 2)?;
            Some(Entry {
                family: u16::from_be_bytes([family[0], family[1]]),
                address: field(&mut bytes)?,
                number: field(&mut bytes)?,
                name: field(&mut bytes)?,
                data: field(&mut bytes)?,
            })
        })() else {
            break;
        };
        entries.push(entry);
    }
    entries
}

/// `entry` first, then the file's other entries but any for the same display; under
/// libXau's lock, written beside the file and renamed over it, mode 0600.
pub fn write_entry(file: &Path, entry: Entry) -> io::Result<()> {
    let _lock = Lock::take(file)?;
    let old = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    entry.encode(&mut out);
    for other in parse(&old).into_iter().filter(|o| !o.same_display(&entry)) {
        other.encode(&mut out);
    }
    let temp = suffixed(file, "-n");
    let _ = std::fs::remove_file(&temp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    io::Write::write_all(&mut f, &out)?;
    drop(f);
    std::fs::rename(&temp, file)
}

fn suffixed(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// libXau's lock on an authority file: `FILE-c` made exclusively, linked to `FILE-l`.
struct Lock {
    create: PathBuf,
    link: PathBuf,
}

impl Lock {
    fn take(file: &Path) -> io::Result<Lock> {
        let (create, link) = (suffixed(file, "-c"), suffixed(file, "-l"));
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&create);
            match made {
                Ok(_) => {
                    let _ = std::fs::hard_link(&create, &link);
                    return Ok(Lock { create, link });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&create)
                        .and_then(|m| m.modified())
                        .map(|t| {
                            SystemTime::now().duration_since(t).unwrap_or_default() > STALE_LOCK
                        })
                        .unwrap_or(false);
                    if stale {
                        let _ = std::fs::remove_file(&create);
                        let _ = std::fs::remove_file(&link);
                    } else if std::time::Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            format!("{} is locked by another writer", file.display()),
                        ));
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
        let _ = std::fs::remove_file(&self.create);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(number: &str, data: &[u8]) -> Entry {
        Entry {
            family: FAMILY_LOCAL,
            address: b"labssh".to_vec(),
            number: number.as_bytes().to_vec(),
            name: b"MIT-MAGIC-COOKIE-1".to_vec(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn an_entry_is_encoded_as_libxau_reads_it() {
        let mut out = Vec::new();
        entry("10", &[0xab, 0xcd]).encode(&mut out);
        let mut want = vec![0x01, 0x00, 0, 6];
        want.extend_from_slice(b"labssh");
        want.extend_from_slice(&[0, 2]);
        want.extend_from_slice(b"10");
        want.extend_from_slice(&[0, 18]);
        want.extend_from_slice(b"MIT-MAGIC-COOKIE-1");
        want.extend_from_slice(&[0, 2, 0xab, 0xcd]);
        assert_eq!(out, want);
        assert_eq!(parse(&out), vec![entry("10", &[0xab, 0xcd])]);
    }

    #[test]
    fn the_new_entry_replaces_the_same_displays_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".Xauthority");
        write_entry(&file, entry("10", b"old")).unwrap();
        write_entry(&file, entry("11", b"other")).unwrap();
        write_entry(&file, entry("10", b"new")).unwrap();
        let entries = parse(&std::fs::read(&file).unwrap());
        assert_eq!(entries, vec![entry("10", b"new"), entry("11", b"other")]);
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // The lock is gone, and no temporary file is left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from(".Xauthority")]);
    }

    #[test]
    fn a_truncated_file_keeps_its_whole_entries() {
        let mut bytes = Vec::new();
        entry("10", b"a").encode(&mut bytes);
        entry("11", b"b").encode(&mut bytes);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(parse(&bytes), vec![entry("10", b"a")]);
    }

    #[test]
    fn a_live_lock_is_waited_for_and_a_stale_one_taken() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        let held = Lock::take(&file).unwrap();
        let err = Lock::take(&file).err().expect("locked");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop(held);
        // A writer that died long ago left its lock.
        std::fs::write(suffixed(&file, "-c"), "").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(suffixed(&file, "-c"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        write_entry(&file, entry("12", b"c")).unwrap();
        assert_eq!(
            parse(&std::fs::read(&file).unwrap()),
            vec![entry("12", b"c")]
        );
    }

    #[test]
    fn cookies_and_displays_are_checked() {
        assert_eq!(decode_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert!(decode_hex("").is_err());
        assert_eq!(display_number("10.0").unwrap(), "10");
        assert_eq!(display_number("12").unwrap(), "12");
        assert!(display_number("x.0").is_err());
        assert!(display_number("").is_err());
    }
}
