//! What the lifecycle asks of Docker: pausing and stopping containers, waking them
//! with the steps reported, their CPU time, the student's keep-alive file (never
//! through a symlink, never another's), and recreating old or outdated containers
//! (home kept) only when the login may.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{docker_cli, environment, run_script, Scratch, STEP};
use labssh_agent::backend::{Backend, EnsureOptions, EnsureStep, Renewal};
use labssh_proto::pb;

/// Ensure options that record the steps taken.
fn recording(renew: bool) -> (EnsureOptions, Arc<Mutex<Vec<EnsureStep>>>) {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let sink = steps.clone();
    let options = EnsureOptions {
        renew,
        steps: Some(Arc::new(move |s| sink.lock().unwrap().push(s))),
        ..Default::default()
    };
    (options, steps)
}

fn state(container: &str) -> String {
    docker_cli(&["inspect", "-f", "{{.State.Status}}", container])
        .trim()
        .to_owned()
}

#[tokio::test]
async fn paused_and_stopped_containers_wake_with_their_steps_and_home() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let (options, steps) = recording(false);
    let first = backend.ensure_with("pia", &env, &options).await.unwrap();
    assert_eq!(*steps.lock().unwrap(), [EnsureStep::Creating]);
    run_script(&*backend, &first.container_id, "pia", "echo kept > ~/notes").await;

    backend.pause(&first.name).await.unwrap();
    assert_eq!(state(&first.name), "paused");
    let inventory = backend.inventory().await.unwrap();
    assert_eq!(
        inventory[0].state,
        labssh_agent::backend::ContainerState::Paused
    );
    let (options, steps) = recording(false);
    let woken = backend.ensure_with("pia", &env, &options).await.unwrap();
    assert_eq!(*steps.lock().unwrap(), [EnsureStep::Unpausing]);
    assert_eq!(woken.container_id, first.container_id);
    let (out, _, _) = run_script(&*backend, &woken.container_id, "pia", "echo awake").await;
    assert_eq!(out.trim(), "awake");

    // A paused container stops too (thawed first, so it gets its SIGTERM).
    backend.pause(&first.name).await.unwrap();
    backend.stop(&first.name).await.unwrap();
    assert_eq!(state(&first.name), "exited");
    let (options, steps) = recording(false);
    let started = backend.ensure_with("pia", &env, &options).await.unwrap();
    assert_eq!(*steps.lock().unwrap(), [EnsureStep::Starting]);
    assert!(started.started && !started.created);
    let (out, _, _) = run_script(&*backend, &started.container_id, "pia", "cat ~/notes").await;
    assert_eq!(out.trim(), "kept");
}

#[tokio::test]
async fn cpu_time_is_read_and_grows_with_work() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = backend.ensure("cora", &environment()).await.unwrap();
    let before = backend.cpu_time(&c.name).await.unwrap().expect("cpu time");
    let spec_script = "timeout 1 yes >/dev/null; true";
    run_script(&*backend, &c.container_id, "cora", spec_script).await;
    let after = backend.cpu_time(&c.name).await.unwrap().expect("cpu time");
    assert!(
        after >= before + Duration::from_millis(300),
        "a second of `yes` (half a CPU) shows: {before:?} → {after:?}"
    );
    docker_cli(&["stop", "-t", "1", &c.name]);
    assert_eq!(backend.cpu_time(&c.name).await.unwrap(), None, "stopped");
}

#[tokio::test]
async fn the_keepalive_file_is_read_safely() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let c = backend.ensure("kim", &env).await.unwrap();
    assert_eq!(backend.keepalive(&c.name, "kim", &env).await.unwrap(), None);
    let wrote = std::time::SystemTime::now() - Duration::from_secs(2);
    run_script(
        &*backend,
        &c.container_id,
        "kim",
        "echo 3h > ~/.labssh-keepalive",
    )
    .await;
    let file = backend
        .keepalive(&c.name, "kim", &env)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.text.trim(), "3h");
    assert!(file.modified >= wrote, "{:?}", file.modified);

    // A symlink to a file saying the same is not followed; nor is a big file read whole.
    let script = "echo 9h > /tmp/k; rm ~/.labssh-keepalive; ln -s /tmp/k ~/.labssh-keepalive";
    run_script(&*backend, &c.container_id, "kim", script).await;
    assert_eq!(backend.keepalive(&c.name, "kim", &env).await.unwrap(), None);
    let script =
        "rm ~/.labssh-keepalive; head -c 100000 /dev/zero | tr '\\0' 1 > ~/.labssh-keepalive";
    run_script(&*backend, &c.container_id, "kim", script).await;
    let big = backend
        .keepalive(&c.name, "kim", &env)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(big.text.len(), 64, "capped");
    // A FIFO would block a reader: refused before it is opened.
    let script = "rm ~/.labssh-keepalive; mkfifo ~/.labssh-keepalive";
    run_script(&*backend, &c.container_id, "kim", script).await;
    let read = tokio::time::timeout(STEP, backend.keepalive(&c.name, "kim", &env)).await;
    assert_eq!(read.expect("does not block").unwrap(), None);
}

#[tokio::test]
async fn old_and_outdated_containers_are_recreated_only_when_the_login_may() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let env = environment();
    let first = backend.ensure("otto", &env).await.unwrap();
    run_script(
        &*backend,
        &first.container_id,
        "otto",
        "echo kept > ~/notes",
    )
    .await;

    // The same settings: kept, renew or not.
    let (options, steps) = recording(true);
    let same = backend.ensure_with("otto", &env, &options).await.unwrap();
    assert_eq!(same.container_id, first.container_id);
    assert!(steps.lock().unwrap().is_empty());

    // Settings that need a new container: kept while others use it...
    let changed = pb::Environment {
        pids_limit: 99,
        ..env.clone()
    };
    let (options, _) = recording(false);
    let busy = backend
        .ensure_with("otto", &changed, &options)
        .await
        .unwrap();
    assert_eq!(busy.container_id, first.container_id);
    // ...recreated, home kept, at a login with no one else.
    let (options, steps) = recording(true);
    let fresh = backend
        .ensure_with("otto", &changed, &options)
        .await
        .unwrap();
    assert_ne!(fresh.container_id, first.container_id);
    assert_eq!(
        *steps.lock().unwrap(),
        [EnsureStep::Recreating(Renewal::Outdated)]
    );
    let (out, _, _) = run_script(&*backend, &fresh.container_id, "otto", "cat ~/notes").await;
    assert_eq!(out.trim(), "kept");
    // What does not need a new container (a description, the lifecycle) changes nothing.
    let described = pb::Environment {
        description: "new words".into(),
        lifecycle: Some(pb::Lifecycle {
            idle_pause_after_ms: 1000,
            ..Default::default()
        }),
        ..changed.clone()
    };
    let (options, steps) = recording(true);
    let again = backend
        .ensure_with("otto", &described, &options)
        .await
        .unwrap();
    assert_eq!(again.container_id, fresh.container_id);
    assert!(steps.lock().unwrap().is_empty());

    // Older than max_age: recreated at the next login that may.
    let aged = pb::Environment {
        lifecycle: Some(pb::Lifecycle {
            max_age_ms: 1,
            ..Default::default()
        }),
        ..changed
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (options, steps) = recording(true);
    let renewed = backend.ensure_with("otto", &aged, &options).await.unwrap();
    assert_ne!(renewed.container_id, fresh.container_id);
    assert!(matches!(
        steps.lock().unwrap()[..],
        [EnsureStep::Recreating(Renewal::MaxAge(_))]
    ));
}
