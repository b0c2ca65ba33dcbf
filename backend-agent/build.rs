//! Builds labssh-init, the static binary the agent mounts into containers as their
//! init, and tells the agent where it is (`LABSSH_INIT_BUILT`).
//!
//! It needs its own cargo run: a static glibc build (`+crt-static`) is only possible
//! with an explicit `--target`, and the `init` profile optimises for size. The nested
//! build uses a target directory of its own, so it never waits on the outer build's
//! lock. When it fails the agent still builds: it then warns at start-up and creates
//! containers for Docker exec. Packagers who ship labssh-init separately set
//! `LABSSH_SKIP_INIT_BUILD=1` and point `init_binary` at it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let init_dir = manifest_dir.join("../init");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", init_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        init_dir.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-env-changed=LABSSH_SKIP_INIT_BUILD");
    if env::var_os("LABSSH_SKIP_INIT_BUILD").is_some() {
        return;
    }
    let target = env::var("TARGET").unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = shared_target_dir(&out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(init_dir.join("Cargo.toml"))
        .args([
            "-p",
            "labssh-init",
            "--profile",
            "init",
            "--target",
            &target,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are not the init's: no inherited flags, wrappers
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

    let binary = target_dir.join(&target).join("init").join("labssh-init");
    match build.output() {
        Ok(out) if out.status.success() && binary.is_file() => {
            println!("cargo:rustc-env=LABSSH_INIT_BUILT={}", binary.display());
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            println!(
                "cargo:warning=building labssh-init failed ({}); the agent will use Docker exec unless `init_binary` names one",
                last.unwrap_or("no output").trim()
            );
        }
        Err(e) => println!("cargo:warning=cannot run cargo to build labssh-init: {e}"),
    }
}

/// `<target>/labssh-init`, shared by the debug, test and release builds of the agent,
/// found from `<target>/<profile>/build/<pkg>-<hash>/out`; `OUT_DIR` itself if the
/// layout is not that.
fn shared_target_dir(out_dir: &Path) -> PathBuf {
    match out_dir.ancestors().nth(4) {
        Some(target)
            if out_dir
                .ancestors()
                .nth(2)
                .is_some_and(|b| b.ends_with("build")) =>
        {
            target.join("labssh-init")
        }
        _ => out_dir.join("labssh-init"),
    }
}
