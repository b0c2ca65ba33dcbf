//! Discovery of the services students run: a server alice starts in her container is
//! listed by name (`8080-alice`, and `web-alice` by the catalogue's friendly name) for
//! operators (`labssh services`) and for her (`ssh alice+@lab services`, with the
//! `ssh -L` that reaches it) within a few seconds, and is gone from both within a few
//! seconds of no longer listening. Nothing in the container reports it: the agent
//! reads the container's socket tables.

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};
use serde_json::Value;

use crate::lab::{Lab, LabOptions};

/// Longer than discovery (every 2 s) and a heartbeat need, whatever the machine's load.
const STEP: Duration = Duration::from_secs(30);

/// `labssh services --json ARGS` against the lab's controller.
async fn services(lab: &Lab, args: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = ["services", "--json"].iter().chain(args).copied().collect();
    let (text, err, ok) = crate::containers::labssh(lab, &args).await;
    assert!(ok, "labssh services failed: {err}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `labssh services --user alice` lists `name` (or, `present` false, no
/// longer does); how long it took.
async fn until(lab: &Lab, name: &str, present: bool) -> Duration {
    let start = Instant::now();
    loop {
        let listed = services(lab, &["--user", "alice"]).await;
        if listed.iter().any(|s| s["name"] == name) == present {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < STEP,
            "{name} {} listed: {listed:#?}",
            if present { "never" } else { "still" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_in_alices_container_is_listed_by_name_until_it_stops() {
    let lab = Lab::start(LabOptions::default()).await;
    let run = |command: &'static str| {
        let lab = &lab;
        async move {
            let out = lab
                .ssh
                .run("alice", &Lab::alice(), &[command])
                .await
                .expect("ssh runs");
            assert_eq!(out.status.code(), Some(0), "{command}: {}", stderr(&out));
        }
    };
    // Nothing of hers listens yet (her container does not even exist).
    assert!(services(&lab, &["--user", "alice"]).await.is_empty());
    // busybox httpd goes to the background by itself and outlives the session.
    run("mkdir -p ~/www && echo hello > ~/www/index.html && httpd -p 8080 -h ~/www").await;
    let appeared = until(&lab, "8080-alice", true).await;
    let listed = services(&lab, &["--name", "web-alice"]).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let web = &listed[0];
    assert_eq!(
        (
            &web["name"],
            &web["user"],
            &web["environment"],
            &web["port"]
        ),
        (
            &"8080-alice".into(),
            &"alice".into(),
            &"default".into(),
            &8080.into()
        )
    );
    assert_eq!(
        (&web["label"], &web["agent"], &web["local"]),
        (&"web".into(), &"agent0".into(), &true.into())
    );

    // Hers, through her self-service login: the name and how to reach it.
    let out = lab
        .ssh
        .run("alice+", &Lab::alice(), &["services"])
        .await
        .expect("ssh runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("8080-alice "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("8080-alice not in {}", stdout(&out)));
    assert!(
        line.contains(" web ") && line.ends_with("ssh -L 8080:localhost:8080 alice@HOST"),
        "{line}"
    );

    run("killall httpd").await;
    let gone = until(&lab, "8080-alice", false).await;
    let out = lab
        .ssh
        .run("alice+", &Lab::alice(), &["services"])
        .await
        .expect("ssh runs");
    assert!(
        stdout(&out).starts_with("nothing listens"),
        "{}",
        stdout(&out)
    );
    println!(
        "services: 8080-alice listed {:.1} s after httpd started, gone {:.1} s after it stopped",
        appeared.as_secs_f64(),
        gone.as_secs_f64()
    );
}
