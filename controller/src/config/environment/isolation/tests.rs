//! The isolation keys parsed from TOML, checked and converted.

use super::*;

/// `[environments.lab]` with `body`, parsed; its problems and wire form.
fn parsed(body: &str) -> (Vec<String>, Option<pb::Isolation>) {
    let text = format!(
        "[environments.default]\nimage = \"img\"\n[environments.lab]\nimage = \"img\"\n{body}"
    );
    match crate::config::Config::from_toml_str(&text) {
        Ok(config) => (Vec::new(), config.environments["lab"].isolation_to_proto()),
        Err(labssh_proto::config::ConfigError::Invalid { problems, .. }) => (problems, None),
        Err(e) => panic!("{body}: {e}"),
    }
}

#[test]
fn nothing_set_sends_nothing() {
    assert_eq!(parsed(""), (Vec::new(), None));
    assert_eq!(parsed("seccomp = \"default\""), (Vec::new(), None));
}

#[test]
fn every_key_reaches_the_wire() {
    let (problems, wire) = parsed(
        r#"
        seccomp = "unconfined"
        rlimits = { nofile = 4096, core = { soft = 0, hard = 1024 } }
        read_only_root = true
        tmpfs = ["/tmp:size=512m,mode=1777", "/var/cache"]
        shm_size = "256m"
        mounts = ["course-data:/srv/course", "datasets:/srv/data:ro"]
        devices = ["/dev/fuse", "/dev/net/tun:/dev/net/tun:rw"]
        "#,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let wire = wire.unwrap();
    assert_eq!(wire.seccomp, "unconfined");
    assert_eq!(
        wire.rlimits["nofile"],
        pb::Rlimit {
            soft: 4096,
            hard: 4096
        }
    );
    assert_eq!(
        wire.rlimits["core"],
        pb::Rlimit {
            soft: 0,
            hard: 1024
        }
    );
    assert!(wire.read_only_root);
    assert_eq!(wire.tmpfs, ["/tmp:size=512m,mode=1777", "/var/cache"]);
    assert_eq!(wire.shm_size_bytes, 256 << 20);
    assert_eq!(
        wire.mounts,
        [
            pb::Mount {
                source: "course-data".into(),
                target: "/srv/course".into()
            },
            pb::Mount {
                source: "datasets".into(),
                target: "/srv/data".into()
            }
        ]
    );
    assert_eq!(wire.devices, ["/dev/fuse", "/dev/net/tun:/dev/net/tun:rw"]);
}

#[test]
fn a_profile_file_ships_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let (problems, wire) = parsed(&format!("seccomp = {:?}", path.to_string_lossy()));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        wire.unwrap().seccomp,
        r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#
    );
}

#[test]
fn every_problem_names_its_key() {
    let (problems, _) = parsed(
        r#"
        seccomp = "/nonexistent/profile.json"
        rlimits = { nofile = { soft = 10, hard = 5 }, stack = 1 }
        tmpfs = ["tmp", "/tmp:size=lots", "/tmp:bogus", "/home/alice", "/srv/x"]
        shm_size = "big"
        mounts = ["course-data", "/host/path:/srv/x", "c:/srv/y", "data:/srv/z:rw", "data:/srv/x"]
        devices = ["fuse", "/dev/fuse:/dev/fuse:rwx", "/dev/../etc/passwd"]
        "#,
    );
    let expected = [
        "environments.lab.seccomp: \"/nonexistent/profile.json\": cannot read",
        "environments.lab.rlimits.nofile: soft 10 is above hard 5",
        "environments.lab.rlimits.stack: unknown limit",
        "environments.lab.shm_size: \"big\"",
        "environments.lab.tmpfs: \"tmp\": \"tmp\" must be an absolute path",
        "environments.lab.tmpfs: \"/tmp:size=lots\": size:",
        "environments.lab.tmpfs: \"/tmp:bogus\": unknown option \"bogus\"",
        "environments.lab.tmpfs: \"/home/alice\": \"/home/alice\" is taken",
        "environments.lab.mounts: \"course-data\": must be \"VOLUME:/path\"",
        "environments.lab.mounts: \"/host/path:/srv/x\": \"/host/path\" is not a volume name",
        "environments.lab.mounts: \"c:/srv/y\": \"c\" is not a volume name",
        "environments.lab.mounts: \"data:/srv/z:rw\": shared mounts are read-only",
        "environments.lab.mounts: \"/srv/x\" is mounted twice",
        "environments.lab.devices: \"fuse\": \"fuse\" must be a device path",
        "environments.lab.devices: \"/dev/fuse:/dev/fuse:rwx\": permissions \"rwx\"",
        "environments.lab.devices: \"/dev/../etc/passwd\": \"/dev/../etc/passwd\" must be a device path",
    ];
    for want in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn rlimit_shapes_are_checked_by_the_parser() {
    for bad in [
        "rlimits = { nofile = -1 }",
        "rlimits = { nofile = { soft = 1 } }",
        "rlimits = { nofile = { soft = 1, hard = 2, max = 3 } }",
        "rlimits = { nofile = \"many\" }",
    ] {
        let text = format!("[environments.default]\nimage = \"img\"\n{bad}");
        let err = crate::config::Config::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nofile") || err.contains("rlimits"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn targets_are_checked() {
    assert!(check_target("/srv/course").is_ok());
    assert!(check_target("/tmp/").is_ok());
    for bad in [
        "/",
        "/proc/x",
        "/.labssh/run",
        "/dev",
        "/srv/../home",
        "/a b",
        "/a,b",
    ] {
        assert!(check_target(bad).is_err(), "{bad}");
    }
}
