//! The stock OpenSSH `sftp` client against labssh-sftp, with `sftp -D` (the client
//! starts the server itself and talks SFTP over its stdin/stdout, no SSH in between).
//! The server runs in a temporary directory as its cwd; local files live in another.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_labssh-sftp");
/// Long enough for a few MB on a slow machine; a server that does not exit when the
/// client closes its end makes the test fail instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Lab {
    _dir: tempfile::TempDir,
    /// The server's working directory.
    remote: PathBuf,
    /// Where local files for put/get live.
    local: PathBuf,
}

struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote");
        let local = dir.path().join("local");
        fs::create_dir(&remote).unwrap();
        fs::create_dir(&local).unwrap();
        Lab {
            _dir: dir,
            remote,
            local,
        }
    }

    /// Runs `sftp -b` with these commands; `{L}` stands for the local directory.
    fn sftp(&self, commands: &str) -> Outcome {
        let batch = self.local.join("batch");
        let commands = commands.replace("{L}", self.local.to_str().unwrap());
        fs::write(&batch, commands).unwrap();
        let mut child = Command::new("sftp")
            .arg("-D")
            .arg(SERVER)
            .arg("-b")
            .arg(&batch)
            .current_dir(&self.remote)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the OpenSSH sftp client is installed");
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "sftp did not finish in {TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        Outcome {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, commands: &str) -> String {
        let out = self.sftp(commands);
        assert!(
            out.success,
            "batch failed\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    fn remote(&self, name: &str) -> PathBuf {
        self.remote.join(name)
    }
}

/// Bytes that differ at every offset (a 64-bit LCG), so a misplaced chunk shows.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn put_and_get_are_byte_exact() {
    let lab = Lab::new();
    let small = b"hello, sftp\n".to_vec();
    // Several MB: many pipelined requests at different offsets, a short last one.
    let big = pattern(9 * 1024 * 1024 + 12_345, 7);
    fs::write(lab.local.join("small.txt"), &small).unwrap();
    fs::write(lab.local.join("big.bin"), &big).unwrap();
    fs::write(lab.local.join("empty"), b"").unwrap();
    lab.ok("put {L}/small.txt\n\
         put {L}/big.bin copy.bin\n\
         put {L}/empty\n\
         get copy.bin {L}/back.bin\n\
         get small.txt {L}/small.back\n\
         get empty {L}/empty.back\n");
    assert_eq!(fs::read(lab.remote("small.txt")).unwrap(), small);
    assert!(
        fs::read(lab.remote("copy.bin")).unwrap() == big,
        "upload differs"
    );
    assert!(
        fs::read(lab.local.join("back.bin")).unwrap() == big,
        "download differs"
    );
    assert_eq!(fs::read(lab.local.join("small.back")).unwrap(), small);
    assert_eq!(fs::read(lab.local.join("empty.back")).unwrap(), b"");

    // Uploading a shorter file over a longer one leaves exactly the shorter one.
    lab.ok("put {L}/small.txt copy.bin\n");
    assert_eq!(fs::read(lab.remote("copy.bin")).unwrap(), small);
}

#[test]
fn put_p_keeps_mode_and_times() {
    let lab = Lab::new();
    let local = lab.local.join("script.sh");
    fs::write(&local, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&local, fs::Permissions::from_mode(0o750)).unwrap();
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    fs::File::options()
        .write(true)
        .open(&local)
        .unwrap()
        .set_modified(old)
        .unwrap();
    lab.ok("put -p {L}/script.sh\n");
    let remote = lab.remote("script.sh");
    assert_eq!(mode(&remote), 0o750);
    assert_eq!(fs::metadata(&remote).unwrap().mtime(), 1_500_000_000);
}

#[test]
fn ls_and_ls_l_show_entries_like_ls() {
    let lab = Lab::new();
    fs::write(lab.remote("notes.txt"), vec![b'x'; 1234]).unwrap();
    fs::set_permissions(lab.remote("notes.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(lab.remote("subdir")).unwrap();
    fs::set_permissions(lab.remote("subdir"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(lab.remote(".hidden"), b"").unwrap();

    let out = lab.ok("ls\n");
    assert!(out.contains("notes.txt"), "{out}");
    assert!(out.contains("subdir"), "{out}");
    assert!(!out.contains(".hidden"), "hidden without -a: {out}");

    let out = lab.ok("ls -l\n");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"))
            .to_owned()
    };
    let notes = line("notes.txt");
    assert!(notes.starts_with("-rw-r----- "), "{notes}");
    assert!(
        notes.split_whitespace().any(|f| f == "1234"),
        "size in {notes}"
    );
    assert!(line("subdir").starts_with("drwxr-xr-x "), "{out}");

    let out = lab.ok("ls -la\n");
    assert!(out.lines().any(|l| l.ends_with(" .hidden")), "{out}");
    assert!(out.lines().any(|l| l.ends_with(" ..")), "{out}");

    // More entries than one READDIR reply holds.
    for i in 0..300 {
        fs::write(lab.remote(&format!("f{i:03}")), b"").unwrap();
    }
    let out = lab.ok("ls -1\n");
    for i in 0..300 {
        assert!(out.contains(&format!("f{i:03}")), "f{i:03} missing");
    }
}

#[test]
fn directories_renames_removals_and_modes() {
    let lab = Lab::new();
    fs::write(lab.remote("a.txt"), b"first").unwrap();
    fs::write(lab.remote("b.txt"), b"second").unwrap();
    lab.ok("mkdir work\n\
         rename a.txt work/moved.txt\n\
         chmod 600 work/moved.txt\n\
         mkdir empty\n\
         rmdir empty\n\
         rm b.txt\n");
    assert!(lab.remote("work").is_dir());
    assert!(!lab.remote("a.txt").exists());
    assert_eq!(fs::read(lab.remote("work/moved.txt")).unwrap(), b"first");
    assert_eq!(mode(&lab.remote("work/moved.txt")), 0o600);
    assert!(!lab.remote("empty").exists());
    assert!(!lab.remote("b.txt").exists());

    // OpenSSH's `rename` uses posix-rename@openssh.com, which replaces the target.
    fs::write(lab.remote("c.txt"), b"new").unwrap();
    lab.ok("rename c.txt work/moved.txt\n");
    assert_eq!(fs::read(lab.remote("work/moved.txt")).unwrap(), b"new");
    assert!(!lab.remote("c.txt").exists());
}

#[test]
fn pwd_is_the_servers_working_directory() {
    let lab = Lab::new();
    fs::create_dir(lab.remote("sub")).unwrap();
    let out = lab.ok("pwd\ncd sub\npwd\n");
    let real = fs::canonicalize(&lab.remote).unwrap();
    assert!(
        out.contains(&format!("Remote working directory: {}\n", real.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Remote working directory: {}/sub\n",
            real.display()
        )),
        "{out}"
    );
}

#[test]
fn symlinks_are_created_target_first() {
    let lab = Lab::new();
    fs::write(lab.remote("target.txt"), b"pointed at").unwrap();
    lab.ok("ln -s target.txt link\nget link {L}/via-link\n");
    let link = lab.remote("link");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("target.txt"));
    assert_eq!(fs::read(lab.local.join("via-link")).unwrap(), b"pointed at");
    let out = lab.ok("ls -l\n");
    assert!(
        out.lines()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with(" link")),
        "{out}"
    );
}

#[test]
fn df_reports_the_file_system() {
    let lab = Lab::new();
    let out = lab.ok("df\n");
    assert!(out.contains("Avail"), "statvfs@openssh.com: {out}");
}

#[test]
fn failures_are_reported_and_fail_the_batch() {
    let lab = Lab::new();
    let out = lab.sftp("get missing.txt {L}/x\n");
    assert!(!out.success, "a failed get fails the batch");
    assert!(
        out.stderr.contains("missing.txt") && out.stderr.contains("not found"),
        "stderr: {}",
        out.stderr
    );
    assert!(!lab.local.join("x").exists());

    let out = lab.sftp("rm missing.txt\n");
    assert!(!out.success);
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);

    fs::create_dir(lab.remote("d")).unwrap();
    fs::write(lab.remote("d/f"), b"").unwrap();
    // OpenSSH prints the status code's text, not the server's message, here.
    let out = lab.sftp("rmdir d\n");
    assert!(!out.success, "a non-empty directory is not removed");
    assert!(out.stderr.contains("rmdir"), "{}", out.stderr);
    assert!(lab.remote("d/f").exists());

    let out = lab.sftp("mkdir d\n");
    assert!(!out.success, "mkdir of an existing directory fails");

    // Later commands do not run after a failure; with `-` they do.
    let out = lab.sftp("-rm missing.txt\nmkdir after\n");
    assert!(out.success, "{}", out.stderr);
    assert!(lab.remote("after").is_dir());
}
