//! Lifecycle hooks, the whole agent on real Docker: every kind fires once with its
//! variables, a webhook reaches a local HTTP server with the JSON, a failing required
//! login hook refuses the session before its command runs, and a hanging one is
//! killed at its timeout while other students are served.

use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_testkit::webhook::WebhookServer;
use pb::session_output::Msg as Out;
use tokio::net::TcpListener;

use crate::grpc_session::{
    drain, heartbeat_where, only_error, open_session, start, start_controller_with, Agent,
    ControllerHandle,
};
use crate::support::{environment, Scratch, STEP};

/// Appends "EVENT USER ENVIRONMENT UID" to /tmp/hooks-EVENT.
fn record() -> Vec<String> {
    let script = r#"echo "$LABSSH_EVENT $LABSSH_USER $LABSSH_ENVIRONMENT $(id -u)" >> /tmp/hooks-$LABSSH_EVENT"#;
    ["/bin/sh", "-c", script].map(String::from).to_vec()
}

fn on(event: &str, run: Vec<String>) -> pb::Hook {
    pb::Hook {
        on: event.into(),
        run,
        timeout_ms: 10_000,
        ..Default::default()
    }
}

/// An agent whose controller serves `environments`, with the catalogue applied.
async fn agent_with(
    scratch: &Scratch,
    environments: Vec<pb::Environment>,
) -> (Agent, ControllerHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let controller = listener.local_addr().unwrap();
    let (handle, mut received) = start_controller_with(listener, environments);
    let agent = Agent::start(scratch, controller).await;
    heartbeat_where(&mut received, |_| true).await;
    (agent, handle)
}

/// Runs `command` as `user` in `env` through a Session; its outputs without the
/// progress lines the agent sends while the container is made (tested in
/// `grpc_session` and `lifecycle`).
async fn session(agent: &Agent, user: &str, env: &str, command: &str) -> Vec<Out> {
    let mut client = agent.client().await;
    let (_tx, outputs) = open_session(&mut client, start(user, env, command)).await;
    let mut outputs = drain(outputs).await;
    outputs.retain(|out| !matches!(out, Out::Progress(_)));
    outputs
}

/// `sh -c script` in `container` as uid 1000, through the docker CLI (not the code
/// under test): its stdout, or `None` if it cannot run there (yet).
async fn read(container: &str, script: &str) -> Option<String> {
    let out = tokio::process::Command::new("docker")
        .args([
            "exec",
            "-u",
            "1000:1000",
            "-w",
            "/",
            container,
            "sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .expect("docker exec in time")
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `script` until `done` holds of its output; panics after 30 s.
async fn wait_for(container: &str, script: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(out) = read(container, script).await {
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "never true: {script:?} gave {out:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "{container} never ran {script:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `labssh_agent_hooks_total` for `agent`, `event` and `outcome` in this
/// process's metrics (each test's agent has its own name).
fn hooks_total(agent: &str, event: &str, outcome: &str) -> u64 {
    let labels = [
        format!("agent=\"{agent}\""),
        format!("event=\"{event}\""),
        format!("outcome=\"{outcome}\""),
    ];
    labssh_telemetry::metrics::render()
        .lines()
        .filter(|l| l.starts_with("labssh_agent_hooks_total{"))
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn lines(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

fn exited_ok(outputs: &[Out]) {
    assert!(
        matches!(outputs.first(), Some(Out::Started(_))),
        "{outputs:?}"
    );
    match outputs.last() {
        Some(Out::Exit(e)) => assert_eq!(e.status, Some(pb::exit_status::Status::Code(0))),
        other => panic!("expected Exit, got {other:?}"),
    }
}

#[tokio::test]
async fn every_kind_of_hook_fires_once_with_its_variables() {
    let scratch = Scratch::new();
    let mut calls = WebhookServer::start("/labssh").await;
    let mut create = on("create", record());
    create.as_root = true;
    let env = pb::Environment {
        name: "hooks".into(),
        hooks: vec![
            create,
            on("start", record()),
            on("login", record()),
            on("logout", record()),
            pb::Hook {
                after_ms: 1_000,
                ..on("", record())
            },
            pb::Hook {
                every_ms: 1_000,
                ..on("", record())
            },
            pb::Hook {
                webhook: calls.url.clone(),
                ..on("login", Vec::new())
            },
        ],
        ..environment()
    };
    let (agent, _controller) = agent_with(&scratch, vec![env]).await;
    let container = format!("{}-kim.hooks", scratch.prefix);

    exited_ok(&session(&agent, "kim", "hooks", "true").await);
    let all = "cat /tmp/hooks-create /tmp/hooks-start /tmp/hooks-login /tmp/hooks-logout \
               /tmp/hooks-after /tmp/hooks-every 2>/dev/null; true";
    let seen = wait_for(&container, all, |out| {
        lines(out, "logout ") == 1 && lines(out, "after ") == 1 && lines(out, "every ") >= 2
    })
    .await;
    for want in [
        "create kim hooks 0",
        "start kim hooks 1000",
        "login kim hooks 1000",
        "logout kim hooks 1000",
        "after kim hooks 1000",
    ] {
        assert_eq!(
            seen.lines().filter(|l| *l == want).count(),
            1,
            "{want:?} in {seen:?}"
        );
    }
    assert!(
        seen.lines()
            .filter(|l| l.starts_with("every "))
            .all(|l| l == "every kim hooks 1000"),
        "{seen}"
    );

    let call = calls.next(STEP).await.expect("the login webhook");
    let (head, body) = (call.head, call.body);
    assert!(head.starts_with("POST /labssh HTTP/1.1"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["event"], "login");
    assert_eq!(json["user"], "kim");
    assert_eq!(json["environment"], "hooks");
    assert_eq!(json["agent"], scratch.agent.as_str());
    let time = json["time"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");

    // A second login: login and logout again, the container's own hooks not.
    exited_ok(&session(&agent, "kim", "hooks", "true").await);
    let seen = wait_for(&container, all, |out| lines(out, "logout ") == 2).await;
    assert_eq!(lines(&seen, "login "), 2, "{seen}");
    assert_eq!(lines(&seen, "create "), 1, "{seen}");
    assert_eq!(lines(&seen, "start "), 1, "{seen}");
    assert_eq!(lines(&seen, "after "), 1, "{seen}");
    assert_eq!(hooks_total(&scratch.agent, "after", "ok"), 1);
    assert_eq!(hooks_total(&scratch.agent, "create", "ok"), 1);
    let call = calls.next(STEP).await.expect("the second login's webhook");
    assert!(call.body.contains("\"event\":\"login\""), "{}", call.body);
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_required_login_hook_refuses_before_the_command() {
    let scratch = Scratch::new();
    let refuse = [
        "/bin/sh",
        "-c",
        "echo to stdout; echo exam not open yet >&2; echo more >&2; exit 1",
    ];
    let env = pb::Environment {
        name: "exam".into(),
        hooks: vec![pb::Hook {
            required: true,
            ..on("login", refuse.map(String::from).to_vec())
        }],
        ..environment()
    };
    let (agent, _controller) = agent_with(&scratch, vec![env]).await;
    let outputs = session(&agent, "kim", "exam", "touch /tmp/ran").await;
    assert_eq!(
        only_error(&outputs),
        "your lab's login hook refused the login: exam not open yet"
    );
    let container = format!("{}-kim.exam", scratch.prefix);
    let ran = read(&container, "test -e /tmp/ran && echo ran || echo not").await;
    assert_eq!(ran.as_deref(), Some("not\n"));
    assert_eq!(hooks_total(&scratch.agent, "login", "refused"), 1);
    agent.stop().await;
}

on_both_paths!(a_hanging_hook_is_killed_at_its_timeout_and_others_are_served);

async fn a_hanging_hook_is_killed_at_its_timeout_and_others_are_served(path: &str) {
    let scratch = Scratch::new();
    let hang = [
        "/bin/sh",
        "-c",
        r#"[ "$LABSSH_USER" = slow ] || exit 0; echo $$ > /tmp/hang.pid; exec sleep 600"#,
    ];
    let env = pb::Environment {
        name: "slow".into(),
        spawn: path.into(),
        hooks: vec![pb::Hook {
            required: true,
            timeout_ms: 8_000,
            ..on("login", hang.map(String::from).to_vec())
        }],
        ..environment()
    };
    let (agent, _controller) = agent_with(&scratch, vec![env]).await;
    exited_ok(&session(&agent, "fast", "slow", "true").await);

    let mut client = agent.client().await;
    let (_tx, slow) = open_session(&mut client, start("slow", "slow", "touch /tmp/ran")).await;
    let slow = tokio::spawn(drain(slow));
    let container = format!("{}-slow.slow", scratch.prefix);
    let pid = wait_for(&container, "cat /tmp/hang.pid 2>/dev/null", |o| {
        !o.trim().is_empty()
    })
    .await;
    // Hung in its hook; another student logs in meanwhile.
    exited_ok(&session(&agent, "fast", "slow", "true").await);
    assert!(!slow.is_finished(), "the hook had 8 s");

    let mut outputs = tokio::time::timeout(STEP, slow).await.unwrap().unwrap();
    outputs.retain(|out| !matches!(out, Out::Progress(_)));
    assert_eq!(
        only_error(&outputs),
        "your lab's login hook refused the login: it did not finish within 8s"
    );
    let alive = format!("[ -d /proc/{} ] && echo alive || echo gone", pid.trim());
    wait_for(&container, &alive, |o| o == "gone\n").await;
    let ran = read(&container, "test -e /tmp/ran && echo ran || echo not").await;
    assert_eq!(ran.as_deref(), Some("not\n"));
    agent.stop().await;
}

#[tokio::test]
async fn timers_are_armed_for_containers_running_when_the_agent_starts() {
    let scratch = Scratch::new();
    let env = pb::Environment {
        name: "ticks".into(),
        hooks: vec![pb::Hook {
            every_ms: 1_000,
            ..on("", record())
        }],
        ..environment()
    };
    let (agent, controller) = agent_with(&scratch, vec![env.clone()]).await;
    exited_ok(&session(&agent, "kim", "ticks", "true").await);
    agent.stop().await;
    controller.vanish().await;
    let container = format!("{}-kim.ticks", scratch.prefix);
    let before = lines(
        &read(&container, "cat /tmp/hooks-every 2>/dev/null; true")
            .await
            .unwrap(),
        "every ",
    );

    // A new agent, and no login: the running container's timer goes on.
    let (agent, _controller) = agent_with(&scratch, vec![env]).await;
    wait_for(
        &container,
        "cat /tmp/hooks-every 2>/dev/null; true",
        |out| lines(out, "every kim ticks 1000") >= before + 2,
    )
    .await;
    assert_eq!(
        hooks_total(&scratch.agent, "login", "ok"),
        0,
        "no hook but the timer's"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_failing_required_create_hook_runs_again_at_the_next_login() {
    let scratch = Scratch::new();
    let script = "if [ -e /tmp/ok ]; then echo created >> /tmp/hooks-create; \
                  else echo course files missing >&2; exit 1; fi";
    let mut create = on(
        "create",
        ["/bin/sh", "-c", script].map(String::from).to_vec(),
    );
    create.required = true;
    create.as_root = true;
    let env = pb::Environment {
        name: "course".into(),
        hooks: vec![create],
        ..environment()
    };
    let (agent, _controller) = agent_with(&scratch, vec![env]).await;
    assert_eq!(
        only_error(&session(&agent, "kim", "course", "true").await),
        "your lab's create hook refused the login: course files missing"
    );
    let container = format!("{}-kim.course", scratch.prefix);
    read(&container, "touch /tmp/ok")
        .await
        .expect("the container runs");
    for _ in 0..2 {
        exited_ok(&session(&agent, "kim", "course", "true").await);
    }
    let created = read(&container, "cat /tmp/hooks-create").await;
    assert_eq!(
        created.as_deref(),
        Some("created\n"),
        "once it succeeded, never again"
    );
    agent.stop().await;
}
