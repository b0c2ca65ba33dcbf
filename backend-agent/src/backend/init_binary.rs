//! Finding labssh-init and labssh-sftp on this host and installing the copies
//! containers mount.
//!
//! Containers bind-mount `<helper_dir>/labssh-init` and `<helper_dir>/labssh-sftp`,
//! copies the agent refreshes at start-up (by rename, so running containers keep the
//! files they started with). The paths stay valid across agent upgrades and
//! `cargo clean`, so a stopped container can always be started again.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Name of the binary beside the agent's executable and in the helper directory.
pub const INIT_NAME: &str = "labssh-init";
/// Name of the SFTP server beside the agent's executable and in the helper directory.
pub const SFTP_NAME: &str = "labssh-sftp";
/// Only root may reach the sockets; root in a container reaches only its own.
const DIR_MODE: u32 = 0o700;
/// The binary must be executable by whatever user a container's root maps to.
const BINARY_MODE: u32 = 0o755;

/// Where the helper lives on this host, once set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperSetup {
    /// The directory holding one sub-directory per container.
    pub dir: PathBuf,
    /// The installed copy of labssh-init that containers mount.
    pub init: PathBuf,
    /// The installed copy of labssh-sftp that containers mount, if there is one.
    pub sftp: Option<PathBuf>,
}

/// Finds labssh-init and labssh-sftp and installs them: the helper setup (see
/// [`HelperSetup::prepare`]) and the SFTP server containers mount, which does not need
/// the helper.
pub fn prepare(config: &Config) -> (Option<HelperSetup>, Option<PathBuf>) {
    match HelperSetup::prepare(config) {
        Some(setup) => {
            let sftp = setup.sftp.clone();
            (Some(setup), sftp)
        }
        // The helper gave up before looking at the SFTP server.
        None => (None, prepare_sftp(config)),
    }
}

/// Finds labssh-sftp and installs it in the helper directory; `None` (after a warning)
/// when containers get no built-in SFTP server.
pub fn prepare_sftp(config: &Config) -> Option<PathBuf> {
    set_up(
        config,
        &Binary {
            key: "sftp_binary",
            configured: &config.sftp_binary,
            name: SFTP_NAME,
            built: SFTP_BUILT,
            ready: "built-in SFTP server ready",
            without: "containers get no built-in SFTP server",
            hint: " (set `sftp_binary`)",
        },
    )
}

/// Where the build put the binaries, if it built them.
const INIT_BUILT: Option<&str> = option_env!("LABSSH_INIT_BUILT");
const SFTP_BUILT: Option<&str> = option_env!("LABSSH_SFTP_BUILT");

impl HelperSetup {
    /// Finds labssh-init and installs it, then labssh-sftp; `None` (after a warning
    /// that says why and what to do) when containers must be created for Docker exec
    /// instead.
    pub fn prepare(config: &Config) -> Option<HelperSetup> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            tracing::warn!(
                "the agent does not run as root, so containers cannot share a socket directory with it; sessions use Docker exec"
            );
            return None;
        }
        let init = set_up(
            config,
            &Binary {
                key: "init_binary",
                configured: &config.init_binary,
                name: INIT_NAME,
                built: INIT_BUILT,
                ready: "in-container helper ready",
                without: "sessions use Docker exec",
                hint: " (set `init_binary` to use the in-container helper)",
            },
        )?;
        let sftp = prepare_sftp(config);
        Some(HelperSetup {
            dir: PathBuf::from(&config.helper_dir),
            init,
            sftp,
        })
    }
}

/// A binary containers mount, and what they do without it.
struct Binary<'a> {
    /// The config key naming it.
    key: &'static str,
    /// Its configured path; empty means look for it.
    configured: &'a str,
    /// Its file name, beside the agent and in the helper directory.
    name: &'static str,
    /// Where the build put it, if it did.
    built: Option<&'static str>,
    /// Logged once it is installed.
    ready: &'static str,
    /// What containers do without it.
    without: &'static str,
    /// Added when it was not found: how to point the agent at it.
    hint: &'static str,
}

/// Finds `binary` and installs it in the helper directory; `None` (after a warning
/// saying why and what containers do without it) when it cannot be had.
fn set_up(config: &Config, binary: &Binary<'_>) -> Option<PathBuf> {
    let source = match find(binary.configured, binary.key, binary.name, binary.built) {
        Ok(path) => path,
        Err(why) => {
            tracing::warn!("{why}; {}{}", binary.without, binary.hint);
            return None;
        }
    };
    let dir = Path::new(&config.helper_dir);
    match install(&source, dir, binary.name) {
        Ok(installed) => {
            tracing::info!(source = %source.display(), installed = %installed.display(), "{}", binary.ready);
            Some(installed)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot install {}; {}", binary.name, binary.without);
            None
        }
    }
}

/// Creates a directory (and its parents) only root may enter; fine if it exists.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// The configured binary (`configured`, from the config key `key`), or the first
/// usable one of: `name` beside the agent's executable, the one built with the agent.
fn find(configured: &str, key: &str, name: &str, built: Option<&str>) -> Result<PathBuf, String> {
    if !configured.is_empty() {
        let path = PathBuf::from(configured);
        return check(&path)
            .map(|()| path)
            .map_err(|why| format!("{key} {configured}: {why}"));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)));
    let built = built.map(PathBuf::from);
    let mut tried = Vec::new();
    for path in beside.into_iter().chain(built) {
        match check(&path) {
            Ok(()) => return Ok(path),
            Err(why) => tried.push(format!("{}: {why}", path.display())),
        }
    }
    Err(format!("no usable {name} ({})", tried.join("; ")))
}

/// The binary must run in any image: a static ELF file (no program interpreter).
fn check(path: &Path) -> Result<(), String> {
    let mut header = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut header))
        .map_err(|e| e.to_string())?;
    match elf_interpreter(&header) {
        Some(false) => Ok(()),
        Some(true) => Err("dynamically linked; it would not run in images without its libc (build it with `+crt-static`)".to_owned()),
        None => Err("not a 64-bit little-endian ELF executable".to_owned()),
    }
}

/// Whether an ELF64 image asks for a program interpreter (is dynamically linked);
/// `None` if it is not one this code reads. Program headers are expected within the
/// bytes given (they follow the ELF header in practice).
fn elf_interpreter(image: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if image.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(image.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(image.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(image.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut interp = false;
    for i in 0..phnum {
        interp |= u32_at(phoff + i * phentsize)? == PT_INTERP;
    }
    Some(interp)
}

/// Copies `source` to `<dir>/<name>` unless an identical copy is there.
fn install(source: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    create_private_dir(dir)?;
    let target = dir.join(name);
    let bytes = std::fs::read(source)?;
    if std::fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(target);
    }
    // Several agents (tests) may install at once: unique temporary names, atomic rename.
    let tmp = dir.join(format!(
        ".{name}.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::write(&tmp, &bytes)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(BINARY_MODE))?;
    std::fs::rename(&tmp, &target).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elf_are_told_apart() {
        let mut image = vec![0u8; 0x40 + 2 * 56];
        image[..6].copy_from_slice(b"\x7fELF\x02\x01");
        image[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        image[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        image[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        image[0x40..0x44].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        assert_eq!(elf_interpreter(&image), Some(false));
        image[0x40 + 56..0x44 + 56].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert_eq!(elf_interpreter(&image), Some(true));
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        image.truncate(0x50);
        assert_eq!(elf_interpreter(&image), None, "program headers cut off");
    }

    #[test]
    fn the_built_helpers_are_static() {
        for path in [INIT_BUILT, SFTP_BUILT].into_iter().flatten() {
            check(Path::new(path)).unwrap();
        }
        // The agent's own test binary is dynamically linked.
        let exe = std::env::current_exe().unwrap();
        assert!(check(&exe).unwrap_err().contains("dynamically linked"));
    }

    #[test]
    fn install_replaces_only_a_different_copy() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        std::fs::write(&source, b"one").unwrap();
        let helper_dir = dir.path().join("helpers");
        let installed = install(&source, &helper_dir, INIT_NAME).unwrap();
        assert_eq!(installed, helper_dir.join(INIT_NAME));
        assert_eq!(std::fs::read(&installed).unwrap(), b"one");
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let first = inode(&installed);
        install(&source, &helper_dir, INIT_NAME).unwrap();
        assert_eq!(inode(&installed), first, "identical copy kept");
        std::fs::write(&source, b"two").unwrap();
        install(&source, &helper_dir, INIT_NAME).unwrap();
        assert_eq!(std::fs::read(&installed).unwrap(), b"two");
        let mode = std::fs::metadata(&helper_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE);
    }

    #[test]
    fn a_configured_binary_must_be_static() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let err = find(exe, "sftp_binary", SFTP_NAME, None).unwrap_err();
        assert!(
            err.starts_with("sftp_binary ") && err.contains("dynamically linked"),
            "{err}"
        );
        let err = find(
            "",
            "sftp_binary",
            SFTP_NAME,
            Some("/nonexistent/labssh-sftp"),
        )
        .unwrap_err();
        assert!(err.contains("no usable labssh-sftp"), "{err}");
        assert!(err.contains("/nonexistent/labssh-sftp"), "{err}");
        if let Some(built) = SFTP_BUILT {
            assert_eq!(
                find("", "sftp_binary", SFTP_NAME, Some(built)).unwrap(),
                Path::new(built)
            );
        }
    }
}
