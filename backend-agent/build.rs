//! Builds the static binaries the agent mounts into containers and tells the agent
//! where they are: labssh-init, their init (`LABSSH_INIT_BUILT`), and labssh-sftp, the
//! SFTP server for images without one (`LABSSH_SFTP_BUILT`).
//!
//! Each needs its own cargo run: a static glibc build (`+crt-static`) is only possible
//! with an explicit `--target`, and each has a profile of its own (`init` optimises for
//! size, `sftp` for speed). The nested builds use target directories of their own, so
//! they never wait on the outer build's lock. When one fails the agent still builds: it
//! then warns at start-up (without labssh-init containers are created for Docker exec;
//! without labssh-sftp they get no built-in SFTP server). Packagers who ship the
//! binaries separately set `LABSSH_SKIP_INIT_BUILD=1` / `LABSSH_SKIP_SFTP_BUILD=1` and
//! point `init_binary` / `sftp_binary` at them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One static helper binary built by a nested cargo run.
struct Helper {
    /// Package, binary and nested target directory name.
    name: &'static str,
    /// Workspace directory of the package.
    dir: &'static str,
    /// Workspace directories of the crates of ours it uses.
    uses: &'static [&'static str],
    /// Cargo profile (defined in the workspace's Cargo.toml).
    profile: &'static str,
    /// Set to skip the build.
    skip_var: &'static str,
    /// rustc-env variable holding the built binary's path.
    built_var: &'static str,
    /// What the agent does without it, for the warning.
    without: &'static str,
}

const HELPERS: [Helper; 2] = [
    Helper {
        name: "labssh-init",
        dir: "init",
        uses: &["helper-proto"],
        profile: "init",
        skip_var: "LABSSH_SKIP_INIT_BUILD",
        built_var: "LABSSH_INIT_BUILT",
        without: "the agent will use Docker exec unless `init_binary` names one",
    },
    Helper {
        name: "labssh-sftp",
        dir: "sftp",
        uses: &[],
        profile: "sftp",
        skip_var: "LABSSH_SKIP_SFTP_BUILD",
        built_var: "LABSSH_SFTP_BUILT",
        without: "containers get no built-in SFTP server unless `sftp_binary` names one",
    },
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for helper in &HELPERS {
        build(helper);
    }
}

fn build(helper: &Helper) {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let package_dir = manifest_dir.join("..").join(helper.dir);
    for dir in std::iter::once(helper.dir).chain(helper.uses.iter().copied()) {
        let dir = manifest_dir.join("..").join(dir);
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    println!("cargo:rerun-if-env-changed={}", helper.skip_var);
    if env::var_os(helper.skip_var).is_some() {
        return;
    }
    let target = env::var("TARGET").unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = shared_target_dir(&out_dir, helper.name);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(package_dir.join("Cargo.toml"))
        .args([
            "-p",
            helper.name,
            "--profile",
            helper.profile,
            "--target",
            &target,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are not the helper's: no inherited flags, wrappers
    // (clippy) or target directory.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let rustflags = if target.ends_with("-gnu") {
        "-Ctarget-feature=+crt-static"
    } else {
        "" // musl targets link statically by default
    };
    build.env("CARGO_ENCODED_RUSTFLAGS", rustflags);

    let binary = target_dir
        .join(&target)
        .join(helper.profile)
        .join(helper.name);
    match build.output() {
        Ok(out) if out.status.success() && binary.is_file() => {
            println!("cargo:rustc-env={}={}", helper.built_var, binary.display());
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            println!(
                "cargo:warning=building {} failed ({}); {}",
                helper.name,
                last.unwrap_or("no output").trim(),
                helper.without
            );
        }
        Err(e) => println!(
            "cargo:warning=cannot run cargo to build {}: {e}",
            helper.name
        ),
    }
}

/// `<target>/<name>`, shared by the debug, test and release builds of the agent, found
/// from `<target>/<profile>/build/<pkg>-<hash>/out`; `OUT_DIR/<name>` if the layout is
/// not that.
fn shared_target_dir(out_dir: &Path, name: &str) -> PathBuf {
    match out_dir.ancestors().nth(4) {
        Some(target)
            if out_dir
                .ancestors()
                .nth(2)
                .is_some_and(|b| b.ends_with("build")) =>
        {
            target.join(name)
        }
        _ => out_dir.join(name),
    }
}
