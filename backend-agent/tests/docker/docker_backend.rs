//! The Docker backend against the real engine. Tests that run processes run twice,
//! through the in-container helper and through Docker exec (`<test>::helper`,
//! `<test>::exec`), and check that the expected path was taken.

use std::time::Duration;

use crate::support::{ensure_on, environment, pty, run_script, Scratch, STEP};
use futures::StreamExt;
use labssh_agent::backend::{
    Backend, BackendError, ContainerState, ExitStatus, Output, Process, SpawnSpec,
};
use labssh_proto::pb;

/// Container names used to be `{prefix}-{user}-{env}`, where "a-b" + "c" and "a" +
/// "b-c" met; now each gets a container, and one of the old name stays in use.
#[tokio::test]
async fn names_never_collide_and_old_names_keep_working() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = pb::Environment {
        name: "c".into(),
        ..environment()
    };
    let b_c = pb::Environment {
        name: "b-c".into(),
        ..environment()
    };
    let first = backend.ensure("a-b", &c).await.unwrap();
    let second = backend.ensure("a", &b_c).await.expect("no collision");
    assert_ne!(first.container_id, second.container_id);
    assert_ne!(first.name, second.name);

    // A container made for Docker exec under the old name, as an older agent left it.
    let exec = pb::Environment {
        name: "old".into(),
        spawn: "exec".into(),
        ..environment()
    };
    let old_name = format!("{}-olga-old", scratch.prefix);
    scratch.labelled_volume("olga");
    crate::support::docker_cli(&[
        "run",
        "-d",
        "--name",
        &old_name,
        "--label",
        "labssh.user=olga",
        "--label",
        "labssh.env=old",
        "--label",
        &format!("labssh.agent={}", scratch.agent),
        "--label",
        &format!("labssh.prefix={}", scratch.prefix),
        "--label",
        "labssh.spawn=exec",
        "-v",
        &format!("{}-home-olga:/home/olga", scratch.prefix),
        crate::support::IMAGE,
        "sleep",
        "3600",
    ]);
    let found = backend.ensure("olga", &exec).await.unwrap();
    assert!(!found.created, "{found:?}");
    assert_eq!(found.name, old_name);
    let (out, _, _) = run_script(&*backend, &found.container_id, "olga", "echo still").await;
    assert_eq!(out, "still\n");
}

#[tokio::test]
async fn ensure_creates_with_labels_and_limits_then_reuses() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();

    let first = backend.ensure("alice", &env).await.unwrap();
    assert!(first.created && first.started, "{first:?}");
    assert_eq!(first.name, format!("{}-alice.default", scratch.prefix));

    let inspect = backend
        .docker()
        .inspect_container(&first.name, None)
        .await
        .unwrap();
    let config = inspect.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["labssh.user"], "alice");
    assert_eq!(labels["labssh.env"], "default");
    assert_eq!(labels["labssh.agent"], scratch.agent);
    assert_eq!(labels["labssh.prefix"], scratch.prefix);
    assert_eq!(labels["labssh.generation"], "2");
    assert_eq!(config.hostname.as_deref(), Some("alice-default"));
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );
    assert_eq!(inspect.state.unwrap().running, Some(true));

    let second = backend.ensure("alice", &env).await.unwrap();
    assert_eq!(second.container_id, first.container_id);
    assert!(!second.created && !second.started, "{second:?}");

    backend
        .docker()
        .stop_container(&first.name, None)
        .await
        .unwrap();
    let inventory = backend.inventory().await.unwrap();
    assert_eq!(inventory.len(), 1);
    assert_eq!(inventory[0].state, ContainerState::Stopped);
    let third = backend.ensure("alice", &env).await.unwrap();
    assert!(!third.created && third.started, "{third:?}");
    let inventory = backend.inventory().await.unwrap();
    assert_eq!(
        (
            inventory[0].user.as_str(),
            inventory[0].environment.as_str()
        ),
        ("alice", "default")
    );
    assert_eq!(inventory[0].state, ContainerState::Running);
}

/// Two deployments (or two test labs) on one engine whose agents share a name: each
/// agent's inventory holds only its own prefix's containers.
#[tokio::test]
async fn inventory_ignores_another_prefix_with_the_same_agent_name() {
    let ours = Scratch::new();
    let mut theirs = Scratch::new();
    theirs.agent = ours.agent.clone();
    let (our_backend, their_backend) = (ours.backend().await, theirs.backend().await);
    let env = environment();
    our_backend.ensure("alice", &env).await.unwrap();
    their_backend.ensure("bob", &env).await.unwrap();

    let users = |list: Vec<labssh_agent::backend::ContainerInfo>| {
        list.into_iter().map(|c| c.user).collect::<Vec<_>>()
    };
    assert_eq!(users(our_backend.inventory().await.unwrap()), ["alice"]);
    assert_eq!(users(their_backend.inventory().await.unwrap()), ["bob"]);
}

#[tokio::test]
async fn concurrent_ensures_create_exactly_one_container() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let results = futures::future::join_all((0..6).map(|_| backend.ensure("bob", &env))).await;
    let created = results
        .iter()
        .map(|r| r.as_ref().expect("ensure"))
        .filter(|e| e.created)
        .count();
    assert_eq!(created, 1);
    assert_eq!(scratch.containers().len(), 1);
}

on_both_paths!(processes_run_as_the_environment_user_in_a_writable_home);
async fn processes_run_as_the_environment_user_in_a_writable_home(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "carol", path).await;

    let (out, _, status) = run_script(&*backend, &c.container_id, "carol", "id -u; id -g").await;
    assert_eq!(
        (out.as_str(), status),
        ("1000\n1000\n", ExitStatus::Code(0))
    );

    let (out, _, _) = run_script(
        &*backend,
        &c.container_id,
        "carol",
        "echo $HOME $USER $LAB; pwd",
    )
    .await;
    assert_eq!(out, "/home/carol carol yes\n/home/carol\n");

    let (out, err, status) = run_script(
        &*backend,
        &c.container_id,
        "carol",
        "echo hi > $HOME/f && cat $HOME/f && stat -c '%u:%g %a' $HOME",
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "hi\n1000:1000 700\n");
}

on_both_paths!(exit_codes_and_stderr_propagate);
async fn exit_codes_and_stderr_propagate(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "dave", path).await;
    let (out, err, status) = run_script(
        &*backend,
        &c.container_id,
        "dave",
        "echo out; echo err >&2; exit 7",
    )
    .await;
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert_eq!(status, ExitStatus::Code(7));
}

on_both_paths!(a_process_says_which_path_started_it);
async fn a_process_says_which_path_started_it(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "elsa", path).await;
    let spec = SpawnSpec::for_user(
        "elsa",
        &environment(),
        vec!["true".into()],
        Vec::new(),
        None,
    );
    let process = backend.spawn(&c.container_id, spec).await.unwrap();
    // What the spawn metric and span report: the backend's word, never a default.
    assert_eq!(process.path.name(), path);
    let (_, _, status) = crate::support::collect(process).await;
    assert_eq!(status, ExitStatus::Code(0));
}

on_both_paths!(stdin_eof_ends_cat);
async fn stdin_eof_ends_cat(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "erin", path).await;
    let spec = SpawnSpec::for_user("erin", &env, vec!["cat".into()], Vec::new(), None);
    let Process {
        mut stdin,
        mut output,
        control,
        ..
    } = backend.spawn(&c.container_id, spec).await.unwrap();
    stdin.write_all(b"hello through stdin\n").await.unwrap();
    let first = tokio::time::timeout(STEP, output.next()).await.unwrap();
    assert_eq!(first, Some(Output::Stdout("hello through stdin\n".into())));
    stdin.shutdown().await.unwrap();
    // The stdin half stays alive: only the half-close may end cat.
    let rest = tokio::time::timeout(STEP, output.collect::<Vec<_>>())
        .await
        .expect("cat exits after EOF");
    assert!(rest.is_empty(), "{rest:?}");
    let status = tokio::time::timeout(STEP, control.wait()).await.unwrap();
    assert_eq!(status.unwrap(), ExitStatus::Code(0));
    drop(stdin);
}

on_both_paths!(pty_reports_the_requested_size_and_follows_resize);
async fn pty_reports_the_requested_size_and_follows_resize(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "frank", path).await;
    let spec = SpawnSpec::for_user(
        "frank",
        &env,
        vec!["/bin/sh".into()],
        Vec::new(),
        Some(pty(101, 33)),
    );
    let Process {
        mut stdin,
        mut output,
        control,
        ..
    } = backend.spawn(&c.container_id, spec).await.unwrap();
    let mut seen = String::new();
    stdin.write_all(b"echo T$TERM; stty size\n").await.unwrap();
    read_until(&mut output, "33 101", &mut seen).await;
    assert!(seen.contains("Txterm"), "{seen:?}");

    control.resize(120, 40).await.unwrap();
    stdin.write_all(b"stty size\n").await.unwrap();
    read_until(&mut output, "40 120", &mut seen).await;

    stdin.write_all(b"exit 5\n").await.unwrap();
    tokio::time::timeout(STEP, async { while output.next().await.is_some() {} })
        .await
        .unwrap();
    assert_eq!(control.wait().await.unwrap(), ExitStatus::Code(5));
}

/// Reads terminal output into `seen` until it contains `needle`.
async fn read_until(
    output: &mut futures::stream::BoxStream<'static, Output>,
    needle: &str,
    seen: &mut String,
) {
    tokio::time::timeout(STEP, async {
        while !seen.contains(needle) {
            match output.next().await {
                Some(Output::Stdout(b)) => seen.push_str(&String::from_utf8_lossy(&b)),
                Some(Output::Stderr(_)) => panic!("a pty has no separate stderr"),
                None => panic!("output ended; saw {seen:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"));
}

on_both_paths!(signals_reach_the_process);
async fn signals_reach_the_process(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "gina", path).await;
    let spec = SpawnSpec::for_user(
        "gina",
        &env,
        vec!["sleep".into(), "600".into()],
        Vec::new(),
        None,
    );
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = backend.spawn(&c.container_id, spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    control.signal("TERM").await.unwrap();
    tokio::time::timeout(STEP, async { while output.next().await.is_some() {} })
        .await
        .expect("sleep ends on TERM");
    assert_eq!(
        control.wait().await.unwrap(),
        ExitStatus::Signal("TERM".into())
    );
    assert!(matches!(
        control.signal("NOPE").await,
        Err(BackendError::UnknownSignal(_))
    ));
    drop(stdin);
}

#[tokio::test]
async fn missing_image_gives_a_clear_error() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = pb::Environment {
        image: "labssh/not-here:never".into(),
        ..environment()
    };
    let err = backend.ensure("hank", &env).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "image 'labssh/not-here:never' is not available on agent '{}'",
            scratch.agent
        )
    );
    assert!(scratch.containers().is_empty());
}

// Docker itself fails to start an exec container; a helper container starts and its
// helper exits when the command cannot run.
on_both_paths!(start_failure_carries_dockers_message_and_leaves_nothing_behind);
async fn start_failure_carries_dockers_message_and_leaves_nothing_behind(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = pb::Environment {
        keepalive_cmd: vec!["/no/such/binary".into()],
        spawn: path.into(),
        ..environment()
    };
    let err = backend.ensure("ivan", &env).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("container failed to start: ") && text.contains("/no/such/binary"),
        "{text}"
    );
    assert!(scratch.containers().is_empty());
}

on_both_paths!(terminal_output_is_passed_through_byte_for_byte);
async fn terminal_output_is_passed_through_byte_for_byte(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = ensure_on(&backend, "judy", path).await;
    // Leading bytes 0..=2 look like Docker's frame headers to a guessing decoder.
    let argv = vec!["printf".into(), "\\001\\002\\000xyz".into()];
    let spec = SpawnSpec::for_user("judy", &env, argv, Vec::new(), Some(pty(80, 24)));
    let process = backend.spawn(&c.container_id, spec).await.unwrap();
    let (out, _, status) = crate::support::collect(process).await;
    assert_eq!(out.as_bytes(), b"\x01\x02\x00xyz");
    assert_eq!(status, ExitStatus::Code(0));
}

on_both_paths!(large_output_arrives_complete_and_in_order);
async fn large_output_arrives_complete_and_in_order(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "kate", path).await;
    let (out, err, status) = run_script(
        &*backend,
        &c.container_id,
        "kate",
        "seq 1 100000; seq 1 1000 >&2",
    )
    .await;
    let expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    assert!(
        out == expected,
        "stdout differs ({} vs {} bytes)",
        out.len(),
        expected.len()
    );
    let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(err, expected);
    assert_eq!(status, ExitStatus::Code(0));
}
