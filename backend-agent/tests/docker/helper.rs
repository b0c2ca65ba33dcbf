//! labssh-init, the in-container helper, against the real engine: what it does as
//! PID 1, what it does for the agent, and who else it refuses.

use std::time::Duration;

use crate::support::{
    assert_path, collect, docker_cli, ensure_on, environment, pty, run_script, Scratch, STEP,
};
use futures::StreamExt;
use labssh_agent::backend::{
    Backend, BackendError, ExitStatus, Output, Process, SpawnPath, SpawnSpec,
};
use labssh_agent::{Config, DockerBackend};
use labssh_proto::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `sh -c script` as `user` through `path` and returns stdout (asserting exit 0).
async fn sh_via(
    backend: &DockerBackend,
    container: &str,
    user: &str,
    path: SpawnPath,
    script: &str,
) -> String {
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let spec = SpawnSpec::for_user(user, &environment(), argv, Vec::new(), None);
    let process = backend.spawn_via(container, spec, path).await.unwrap();
    let (out, err, status) = collect(process).await;
    assert_eq!(status, ExitStatus::Code(0), "{script}: {err}");
    out
}

#[tokio::test]
async fn the_image_entrypoint_still_serves() {
    crate::support::ensure_httpd_image();
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = pb::Environment {
        image: crate::support::HTTPD_IMAGE.into(),
        ..environment()
    };
    let c = backend.ensure("web", &env).await.unwrap();
    assert_path(&backend, &c.container_id, SpawnPath::Helper).await;

    // The image's ENTRYPOINT + CMD run as its USER; the helper only wraps them.
    let mut page = String::new();
    for _ in 0..50 {
        match backend
            .connect_tcp(&c.container_id, "localhost", 8080)
            .await
        {
            Ok(mut conn) => {
                conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
                tokio::time::timeout(STEP, conn.read_to_string(&mut page))
                    .await
                    .unwrap()
                    .unwrap();
                break;
            }
            // httpd binds a moment after the container starts.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(page.contains(crate::support::HTTPD_PAGE), "{page:?}");
    let (ps, _, _) = run_script(&*backend, &c.container_id, "web", "ps -o user,comm").await;
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().eq(["nobody", "httpd"])),
        "{ps}"
    );
    assert!(ps.lines().any(|l| l.contains("init")), "{ps}");
}

#[tokio::test]
async fn tcp_connections_report_what_went_wrong() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "tcp", "helper").await;
    let refused = backend.connect_tcp(&c.container_id, "127.0.0.1", 1).await;
    let err = refused
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("refused"),
        "{err}"
    );
    let unknown = backend
        .connect_tcp(&c.container_id, "no-such-host.invalid", 80)
        .await;
    let err = unknown.err().expect("unknown host").to_string();
    assert!(err.contains("cannot resolve"), "{err}");

    // A service started in a session is reachable by the container's own host name.
    let argv = vec!["nc".into(), "-l".into(), "-p".into(), "9000".into()];
    let spec = SpawnSpec::for_user("tcp", &environment(), argv, Vec::new(), None);
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = backend.spawn(&c.container_id, spec).await.unwrap();
    let mut conn = None;
    for _ in 0..50 {
        match backend
            .connect_tcp(&c.container_id, "tcp-default", 9000)
            .await
        {
            Ok(stream) => {
                conn = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut conn = conn.expect("nc listens");
    conn.write_all(b"through the helper\n").await.unwrap();
    conn.shutdown().await.unwrap();
    let first = tokio::time::timeout(STEP, output.next()).await.unwrap();
    assert_eq!(first, Some(Output::Stdout("through the helper\n".into())));
    drop((stdin, conn));
    let _ = tokio::time::timeout(STEP, control.wait()).await;
}

#[tokio::test]
async fn orphans_are_reaped() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "olga", "helper").await;
    // Each subshell exits at once, leaving its `sleep` to PID 1. They sleep
    // until killed below: how soon the last one is exec'd (it is listed as
    // `sh` until then) does not matter.
    let (_, _, status) = run_script(
        &*backend,
        &c.container_id,
        "olga",
        "for i in 1 2 3 4 5 6 7 8; do (sleep 600 >/dev/null 2>&1 &); done",
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0));
    // Name, state and parent of every process.
    let states = "cat /proc/[0-9]*/stat | cut -d' ' -f2-4";
    let mut seen = String::new();
    for _ in 0..100 {
        (seen, _, _) = run_script(&*backend, &c.container_id, "olga", states).await;
        if seen.matches("(sleep) S 1\n").count() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.matches("(sleep) S 1\n").count(),
        8,
        "the orphans run as children of PID 1: {seen}"
    );
    // Killed, each is a zombie of PID 1 until PID 1 reaps it.
    let (_, _, status) =
        run_script(&*backend, &c.container_id, "olga", "kill $(pidof sleep)").await;
    assert_eq!(status, ExitStatus::Code(0));
    let mut last = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (out, _, _) = run_script(&*backend, &c.container_id, "olga", states).await;
        // A zombie would stay listed, in state Z, until reaped.
        if !out.contains("(sleep)") {
            return;
        }
        last = out;
    }
    panic!("orphans left behind (Z = zombie): {last}");
}

#[tokio::test]
async fn stopping_the_container_ends_sessions_with_exit_signal() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "stan", "helper").await;
    let sleeper = SpawnSpec::for_user(
        "stan",
        &env,
        vec!["sleep".into(), "600".into()],
        Vec::new(),
        None,
    );
    let shell = SpawnSpec::for_user(
        "stan",
        &env,
        vec!["/bin/sh".into()],
        Vec::new(),
        Some(pty(80, 24)),
    );
    let sleeper = backend.spawn(&c.container_id, sleeper).await.unwrap();
    let shell = backend.spawn(&c.container_id, shell).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopped = std::time::Instant::now();
    backend
        .docker()
        .stop_container(&c.container_id, None)
        .await
        .unwrap();
    for process in [sleeper, shell] {
        let (_, _, status) = collect(process).await;
        assert_eq!(status, ExitStatus::Signal("HUP".into()));
    }
    // Well within the stop timeout: nothing had to be killed by Docker.
    let code = docker_cli(&["inspect", "-f", "{{.State.ExitCode}}", &c.container_id]);
    assert_eq!(code.trim(), "143", "the main command ended by TERM");
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );

    // The next login starts it again, helper and all.
    let again = backend.ensure("stan", &env).await.unwrap();
    assert!(again.started);
    let (out, _, _) = run_script(&*backend, &again.container_id, "stan", "echo back").await;
    assert_eq!(out, "back\n");
    assert_path(&backend, &again.container_id, SpawnPath::Helper).await;
}

#[tokio::test]
async fn processes_inside_the_container_get_nothing_from_the_socket() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let root_env = pb::Environment {
        name: "root".into(),
        run_as_root: true,
        cap_add: vec!["CHOWN".into(), "DAC_OVERRIDE".into(), "FOWNER".into()],
        ..environment()
    };
    let c = backend.ensure("mallory", &root_env).await.unwrap();
    assert_path(&backend, &c.container_id, SpawnPath::Helper).await;
    let (_probe_dir, probe) = build_peer_probe();
    docker_cli(&[
        "cp",
        probe.to_str().unwrap(),
        &format!("{}:/tmp/probe", c.container_id),
    ]);

    // Root in the container reaches the socket; the peer check closes the connection
    // before a single byte, and nothing runs.
    let as_root = |script: &str| {
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        SpawnSpec::for_user("mallory", &root_env, argv, Vec::new(), None)
    };
    let spec = as_root("/tmp/probe");
    let (out, err, _) = collect(backend.spawn(&c.container_id, spec).await.unwrap()).await;
    assert!(out.contains("received 0 bytes"), "{out} {err}");
    // Any other user cannot even reach it.
    let (out, _, _) = run_script(&*backend, &c.container_id, "mallory", "/tmp/probe").await;
    assert!(out.contains("Permission denied"), "{out}");
    let (out, _, _) = run_script(
        &*backend,
        &c.container_id,
        "mallory",
        "ls /tmp/pwned 2>&1; true",
    )
    .await;
    assert!(
        out.contains("No such file"),
        "the probe ran something: {out}"
    );
    let log = crate::support::docker_logs(&c.container_id);
    assert!(log.contains("refused a connection from pid"), "{log}");
    // The agent is still served.
    let spec = as_root("id -u");
    let (out, _, _) = collect(backend.spawn(&c.container_id, spec).await.unwrap()).await;
    assert_eq!(out, "0\n");
}

/// tests/docker/peer_probe.c compiled static, in a directory of its own that goes
/// when the returned guard does.
fn build_peer_probe() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let binary = labssh_testkit::process::static_c_binary(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/docker/peer_probe.c"
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe");
    std::fs::write(&path, binary).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

#[tokio::test]
async fn both_paths_give_processes_the_same_identity() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    // The same container through either path: same user, groups, environment, directory.
    let c = ensure_on(&backend, "ida", "helper").await;
    let script = "id; env | grep -v '^_=' | sort; pwd; umask; grep NoNewPrivs /proc/self/status";
    let helper = sh_via(&backend, &c.container_id, "ida", SpawnPath::Helper, script).await;
    let exec = sh_via(&backend, &c.container_id, "ida", SpawnPath::Exec, script).await;
    assert_eq!(helper, exec);

    // Capabilities are those of a container made for Docker exec, for the student and
    // for root: the helper's own (which Docker exec in a helper container would hand
    // out to root) never reach a child.
    let envs = |spawn: &str| {
        [
            pb::Environment {
                name: format!("user-{spawn}"),
                spawn: spawn.into(),
                ..environment()
            },
            pb::Environment {
                name: format!("root-{spawn}"),
                run_as_root: true,
                cap_add: vec!["CHOWN".into(), "NET_BIND_SERVICE".into()],
                spawn: spawn.into(),
                ..environment()
            },
        ]
    };
    let mut caps = Vec::new();
    for spawn in ["helper", "exec"] {
        let mut seen = String::new();
        for env in envs(spawn) {
            let c = backend.ensure("ida", &env).await.unwrap();
            assert_eq!(
                backend.spawn_path(&c.container_id).await.unwrap().name(),
                spawn
            );
            let argv = vec![
                "/bin/sh".into(),
                "-c".into(),
                "id -u; grep Cap /proc/self/status".into(),
            ];
            let spec = SpawnSpec::for_user("ida", &env, argv, Vec::new(), None);
            let (out, _, _) = collect(backend.spawn(&c.container_id, spec).await.unwrap()).await;
            seen.push_str(&out);
        }
        caps.push(seen);
    }
    assert_eq!(caps[0], caps[1]);
    // CHOWN (bit 0) and NET_BIND_SERVICE (bit 10) for root; nothing for uid 1000.
    assert!(caps[0].contains("CapEff:\t0000000000000401"), "{}", caps[0]);
    assert!(caps[0].contains("CapBnd:\t0000000000000000"), "{}", caps[0]);
}

#[tokio::test]
async fn debian_works_on_both_paths() {
    crate::support::ensure_debian_image();
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    for spawn in ["helper", "exec"] {
        let env = pb::Environment {
            name: format!("deb-{spawn}"),
            image: crate::support::DEBIAN_IMAGE.into(),
            shell: "/bin/bash".into(),
            spawn: spawn.into(),
            ..environment()
        };
        let c = backend.ensure("dora", &env).await.unwrap();
        assert_eq!(
            backend.spawn_path(&c.container_id).await.unwrap().name(),
            spawn
        );
        let argv = vec![
            "/bin/bash".into(),
            "-lc".into(),
            "echo ${BASH_VERSION%%.*} $(id -u) $HOME; cat /etc/debian_version | cut -c1-2; python3 -c 'print(6*7)'".into(),
        ];
        let spec = SpawnSpec::for_user("dora", &env, argv, Vec::new(), None);
        let (out, err, status) = collect(backend.spawn(&c.container_id, spec).await.unwrap()).await;
        assert_eq!(status, ExitStatus::Code(0), "{spawn}: {err}");
        assert_eq!(out, "5 1000 /home/dora\n12\n42\n", "{spawn}");

        let spec = SpawnSpec::for_user(
            "dora",
            &env,
            vec!["/bin/bash".into()],
            Vec::new(),
            Some(pty(91, 27)),
        );
        let Process {
            mut stdin,
            mut output,
            control,
            ..
        } = backend.spawn(&c.container_id, spec).await.unwrap();
        stdin.write_all(b"stty size; tty; exit 4\n").await.unwrap();
        let mut seen = String::new();
        tokio::time::timeout(STEP, async {
            while let Some(Output::Stdout(b)) = output.next().await {
                seen.push_str(&String::from_utf8_lossy(&b));
            }
        })
        .await
        .unwrap();
        assert!(
            seen.contains("27 91") && seen.contains("/dev/pts/"),
            "{spawn}: {seen}"
        );
        assert_eq!(
            control.wait().await.unwrap(),
            ExitStatus::Code(4),
            "{spawn}"
        );
    }
}

/// When the container was last started.
fn started_at(container: &str) -> String {
    docker_cli(&["inspect", "-f", "{{.State.StartedAt}}", container])
}

#[tokio::test]
async fn a_helper_whose_socket_is_gone_is_restored_never_bypassed() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "fred", "helper").await;
    let before = started_at(&c.container_id);
    // Its socket gone, as if root in the container had deleted it.
    docker_cli(&["exec", &c.container_id, "rm", "/.labssh/run/helper.sock"]);
    let (out, _, status) = run_script(&*backend, &c.container_id, "fred", "echo still here").await;
    assert_eq!(
        (out.as_str(), status),
        ("still here\n", ExitStatus::Code(0))
    );
    // Served by the helper again, after a restart; never by Docker exec.
    assert_path(&backend, &c.container_id, SpawnPath::Helper).await;
    assert_ne!(started_at(&c.container_id), before, "not restarted");
    let (out, _, _) = run_script(
        &*backend,
        &c.container_id,
        "fred",
        "test -S /.labssh/run/helper.sock && echo back",
    )
    .await;
    assert_eq!(out, "back\n");
}

/// A helper container as agents before the socket's tmpfs made them: the socket in a
/// host directory the container could write, no generation label.
#[tokio::test]
async fn containers_of_the_older_layout_are_recreated_with_their_home() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let old = format!("{}-lucy-default", scratch.prefix);
    let volume = format!("{}-home-lucy", scratch.prefix);
    let dir = tempfile::tempdir().unwrap();
    scratch.labelled_volume("lucy");
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &old,
        "--label",
        "labssh.user=lucy",
        "--label",
        "labssh.env=default",
        "--label",
        &format!("labssh.agent={}", scratch.agent),
        "--label",
        &format!("labssh.prefix={}", scratch.prefix),
        "--label",
        "labssh.spawn=helper",
        "-v",
        &format!("{volume}:/home/lucy"),
        "-v",
        &format!("{}:/.labssh/run", dir.path().display()),
        crate::support::IMAGE,
        "sh",
        "-c",
        "echo kept > /home/lucy/notes; sleep 3600",
    ]);
    let found = backend.ensure("lucy", &env).await.unwrap();
    assert!(found.created, "{found:?}");
    assert_ne!(found.name, old);
    assert!(
        !docker_cli(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .any(|n| n == old),
        "the old container is still there"
    );
    assert_path(&backend, &found.container_id, SpawnPath::Helper).await;
    let (out, _, _) = run_script(&*backend, &found.container_id, "lucy", "cat ~/notes").await;
    assert_eq!(out, "kept\n");
}

#[tokio::test]
async fn without_labssh_init_containers_use_docker_exec() {
    let scratch = Scratch::new();
    let config = Config {
        init_binary: "/nonexistent/labssh-init".into(),
        ..scratch.config()
    };
    let backend = DockerBackend::connect(&config).await.unwrap();
    let c = backend.ensure("gus", &environment()).await.unwrap();
    assert_path(&backend, &c.container_id, SpawnPath::Exec).await;
    let (out, _, status) = run_script(&backend, &c.container_id, "gus", "echo via exec").await;
    assert_eq!((out.as_str(), status), ("via exec\n", ExitStatus::Code(0)));
    let err = backend
        .connect_tcp(&c.container_id, "localhost", 22)
        .await
        .err()
        .unwrap();
    // Without a helper the agent connects from inside the container's network itself:
    // nothing listens on port 22 there, and the student is told so.
    assert!(matches!(err, BackendError::ConnectFailed { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("(127.0.0.1:22)") && text.contains("refused"),
        "{err}"
    );
}

#[tokio::test]
async fn long_container_names_still_reach_the_helper() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let user = "u".repeat(32);
    let env = pb::Environment {
        name: "e".repeat(60),
        ..environment()
    };
    let c = backend.ensure(&user, &env).await.unwrap();
    assert!(c.name.len() > 100, "{}", c.name);
    assert_path(&backend, &c.container_id, SpawnPath::Helper).await;
    let (out, _, _) = run_script(&*backend, &c.container_id, &user, "echo long").await;
    assert_eq!(out, "long\n");
}

#[tokio::test]
async fn fifty_sessions_at_once_each_get_their_own_output() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "pam", "helper").await;
    let runs = (0..50).map(|i| {
        let backend = backend.clone();
        let id = c.container_id.clone();
        async move {
            let (out, _, status) = run_script(
                &*backend,
                &id,
                "pam",
                &format!("echo session-{i}; exit {}", i % 7),
            )
            .await;
            assert_eq!(out, format!("session-{i}\n"));
            assert_eq!(status, ExitStatus::Code(i % 7));
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn stdin_beyond_the_window_arrives_complete() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "wim", "helper").await;
    let argv = vec!["/bin/sh".into(), "-c".into(), "sleep 0.3; wc -c".into()];
    let spec = SpawnSpec::for_user("wim", &env, argv, Vec::new(), None);
    let Process {
        mut stdin,
        output,
        control,
        ..
    } = backend.spawn(&c.container_id, spec).await.unwrap();
    let payload = vec![b'x'; 3_000_000];
    let writer = tokio::spawn(async move {
        stdin.write_all(&payload).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let out: Vec<Output> = tokio::time::timeout(STEP, output.collect()).await.unwrap();
    writer.await.unwrap();
    assert_eq!(out, vec![Output::Stdout("3000000\n".into())]);
    assert_eq!(control.wait().await.unwrap(), ExitStatus::Code(0));
}

#[tokio::test]
async fn a_vanished_agent_gets_its_processes_hung_up() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "vic", "helper").await;
    let argv = vec!["sleep".into(), "777".into()];
    let spec = SpawnSpec::for_user("vic", &env, argv, Vec::new(), None);
    let process = backend.spawn(&c.container_id, spec).await.unwrap();
    let running = || async {
        let (out, _, _) = run_script(&*backend, &c.container_id, "vic", "ps -o args").await;
        out.contains("sleep 777")
    };
    assert!(running().await);
    drop(process); // the connection closes, as when an agent dies
    for _ in 0..50 {
        if !running().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sleep outlived its connection");
}

#[tokio::test]
async fn without_a_terminal_the_agent_holds_the_process_pipes_and_init_none() {
    // With `helper_pipes` (the default) labssh-init hands the process's stdin, stdout
    // and stderr to the agent and keeps no copy: the bytes skip its relay. Relayed,
    // init holds them and the agent none.
    let scratch = Scratch::new();
    let script = "for f in 0 1 2; do readlink /proc/$$/fd/$f; done; read line; echo \"got $line\"";
    for handed in [true, false] {
        let config = Config {
            helper_pipes: handed,
            ..scratch.config()
        };
        let backend = DockerBackend::connect(&config).await.unwrap();
        let c = ensure_on(&backend, "pip", "helper").await;
        let init = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &c.container_id]);
        let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
        let spec = SpawnSpec::for_user("pip", &environment(), argv, Vec::new(), None);
        let Process {
            mut stdin,
            mut output,
            control,
            path,
        } = backend.spawn(&c.container_id, spec).await.unwrap();
        assert_eq!(path, SpawnPath::Helper);
        // The three descriptors, while the shell waits on its stdin.
        let mut out = String::new();
        while out.lines().count() < 3 {
            match tokio::time::timeout(STEP, output.next()).await.unwrap() {
                Some(Output::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("{other:?} before the descriptors ({out:?})"),
            }
        }
        let fds: Vec<String> = out.lines().map(str::to_owned).collect();
        assert!(fds.iter().all(|f| f.starts_with("pipe:")), "{fds:?}");
        assert_eq!(
            fds.iter().collect::<std::collections::HashSet<_>>().len(),
            3,
            "{fds:?}"
        );
        let agent = labssh_testkit::pipes_held_by("self");
        let helper = labssh_testkit::pipes_held_by(init.trim());
        for fd in &fds {
            assert_eq!(agent.contains(fd), handed, "agent, {fd}, handed {handed}");
            assert_eq!(helper.contains(fd), !handed, "init, {fd}, handed {handed}");
        }
        stdin
            .write_all(b"hello\n")
            .await
            .unwrap_or_else(|e| panic!("handed {handed}: {e}"));
        // The shell may have read its line and exited already: relayed, its helper
        // connection is then closed and the EOF cannot be sent, which is no error.
        let _ = stdin.shutdown().await;
        let rest: Vec<Output> = tokio::time::timeout(STEP, output.collect()).await.unwrap();
        assert_eq!(rest, vec![Output::Stdout("got hello\n".into())]);
        assert_eq!(control.wait().await.unwrap(), ExitStatus::Code(0));
    }
}

#[tokio::test]
async fn handed_pipes_keep_stderr_apart_signals_and_exit_statuses() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "sig", "helper").await;
    let (out, err, status) = run_script(
        &*backend,
        &c.container_id,
        "sig",
        "echo out; echo err >&2; exit 42",
    )
    .await;
    assert_eq!(
        (out.as_str(), err.as_str(), status),
        ("out\n", "err\n", ExitStatus::Code(42))
    );
    // A signal goes through the helper's connection; the status says which.
    let argv = vec!["sleep".into(), "600".into()];
    let spec = SpawnSpec::for_user("sig", &environment(), argv, Vec::new(), None);
    let process = backend.spawn(&c.container_id, spec).await.unwrap();
    process.control.signal("TERM").await.unwrap();
    let (_, _, status) = collect(process).await;
    assert_eq!(status, ExitStatus::Signal("TERM".into()));
    // A program that does not exist is refused as before, nothing handed over.
    let argv = vec!["/no/such/program".into()];
    let spec = SpawnSpec::for_user("sig", &environment(), argv, Vec::new(), None);
    match backend.spawn(&c.container_id, spec).await {
        Err(BackendError::SpawnFailed(m)) => assert!(m.contains("/no/such/program"), "{m}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a missing program started"),
    }
}
