//! `labssh prestart` and the controller's Prestart on a real lab: containers
//! created and started ahead of a class by users file and by group, reported
//! as already there the second time, failures reported per student without
//! stopping the rest; the schedule firing on the real clock.

use std::collections::BTreeMap;

use labssh_proto::pb;
use labssh_proto::pb::PrestartOutcome as Outcome;
use labssh_testkit::docker::{docker, TEST_IMAGE};

use crate::lab::{Lab, LabOptions};

/// What one Prestart call answered: the planned event and each user's result.
pub struct Answer {
    pub planned: pb::PrestartPlanned,
    pub results: BTreeMap<String, pb::PrestartResult>,
}

impl Answer {
    pub fn outcome(&self, user: &str) -> Outcome {
        self.results[user].outcome()
    }
}

/// Calls Prestart with the lab's admin client and reads the stream to its end.
pub async fn prestart(lab: &Lab, request: pb::PrestartRequest) -> Result<Answer, tonic::Status> {
    let client = lab.cluster.as_ref().unwrap().controller_client().unwrap();
    let mut stream = client.clone().prestart(request).await?.into_inner();
    let mut planned = None;
    let mut results = BTreeMap::new();
    while let Some(event) = stream.message().await? {
        match event.event.expect("an event") {
            pb::prestart_event::Event::Planned(p) => {
                assert!(planned.is_none(), "one planned event");
                assert!(results.is_empty(), "planned comes first");
                planned = Some(p);
            }
            pb::prestart_event::Event::Result(r) => {
                assert!(
                    results.insert(r.user.clone(), r).is_none(),
                    "one result per user"
                );
            }
        }
    }
    let planned = planned.expect("a planned event");
    assert_eq!(
        planned.total as usize,
        results.len(),
        "a result for every planned user"
    );
    Ok(Answer { planned, results })
}

pub fn request(environment: &str, users: &[&str], group: &str) -> pb::PrestartRequest {
    pb::PrestartRequest {
        environment: environment.into(),
        users: users.iter().map(|u| u.to_string()).collect(),
        group: group.into(),
        concurrency: 2,
    }
}

/// Puts `users` in `group` in the lab's users file (with a password each).
pub fn in_group(lab: &Lab, group: &str, users: &[&str]) {
    for user in users {
        labssh_proxy::users::add_user_in_groups(
            &lab.users_file,
            user,
            Some("pw-not-used"),
            None,
            &[group.to_string()],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prestart_by_group_and_by_file_creates_starts_and_then_finds_them_there() {
    let lab = Lab::start(LabOptions::default()).await;
    in_group(&lab, "cs101", &["carol", "dave"]);

    let first = prestart(&lab, request("", &[], "cs101")).await.unwrap();
    assert_eq!(
        first.planned.environment, "default",
        "the default filled in"
    );
    assert_eq!(first.results.len(), 2);
    for user in ["carol", "dave"] {
        assert_eq!(
            first.outcome(user),
            Outcome::Created,
            "{user}: {:?}",
            first.results[user]
        );
        assert_eq!(first.results[user].agent, "agent0");
        assert_eq!(lab.container_state(user, "default"), "running", "{user}");
    }
    for outsider in ["alice", "bob"] {
        assert_eq!(
            lab.container_id(outsider, "default"),
            None,
            "{outsider} is not in cs101"
        );
    }

    // Again: already there. One of them stopped meanwhile: started.
    docker(&["stop", "-t", "1", &lab.container_name("carol", "default")]).unwrap();
    let again = prestart(&lab, request("default", &["dave"], "cs101"))
        .await
        .unwrap();
    assert_eq!(again.results.len(), 2, "dave named twice counts once");
    assert_eq!(again.outcome("carol"), Outcome::Started);
    assert_eq!(again.outcome("dave"), Outcome::Already);
    assert_eq!(lab.container_state("carol", "default"), "running");

    // Through the binary, by users file: the summary, and success.
    let file = lab.dir.path().join("class.txt");
    std::fs::write(&file, "# the class\ncarol\n\nerin   # new this term\n").unwrap();
    // `--at` a moment just ahead: it says when, waits, then runs.
    let at = (chrono::Local::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let out = cli(
        &lab,
        &[
            "--env",
            "default",
            "--users",
            file.to_str().unwrap(),
            "--at",
            &at,
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("labssh: prestart starts at"), "{stderr}");
    assert!(
        stdout.contains("prestart of default: 1 created, 0 started, 1 already running, 0 failed"),
        "{stdout}"
    );
    assert_eq!(lab.container_state("erin", "default"), "running");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_are_reported_per_student_and_the_rest_go_on() {
    let lab = Lab::start(LabOptions::default()).await;
    // A container not made by labssh holds the name frank's would have.
    let taken = lab.container_name("frank", "default");
    docker(&[
        "create",
        "--name",
        &taken,
        "--label",
        &format!("labssh.prefix={}", lab.cleanup.prefix),
        TEST_IMAGE,
        "true",
    ])
    .unwrap();

    let mixed = prestart(
        &lab,
        request(
            "default",
            &["alice", "Bad Name", "frank", "bob", "alice"],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(mixed.planned.total, 4);
    assert_eq!(mixed.outcome("alice"), Outcome::Created);
    assert_eq!(mixed.outcome("bob"), Outcome::Created);
    assert_eq!(mixed.outcome("Bad Name"), Outcome::Failed);
    assert!(
        mixed.results["Bad Name"]
            .message
            .contains("invalid login name"),
        "{:?}",
        mixed.results
    );
    assert_eq!(mixed.outcome("frank"), Outcome::Failed);
    assert!(
        mixed.results["frank"]
            .message
            .contains("does not belong to this user"),
        "{:?}",
        mixed.results["frank"]
    );
    assert_eq!(lab.container_state("alice", "default"), "running");
    assert_eq!(
        lab.container_state("frank", "default"),
        "created",
        "the foreign container untouched"
    );

    // An environment whose image is missing fails every student, naming it.
    let broken = prestart(&lab, request("broken", &["alice", "bob", "carol"], ""))
        .await
        .unwrap();
    for user in ["alice", "bob", "carol"] {
        assert_eq!(broken.outcome(user), Outcome::Failed, "{user}");
        assert!(
            broken.results[user]
                .message
                .contains("labssh/this-image-does-not-exist:never"),
            "{:?}",
            broken.results[user]
        );
        assert_eq!(lab.container_id(user, "broken"), None);
    }

    // Requests that cannot begin are refused, naming what is wrong.
    let unknown = prestart(&lab, request("", &[], "cs999"))
        .await
        .err()
        .unwrap();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("cs999"), "{}", unknown.message());
    let env = prestart(&lab, request("nope", &["alice"], ""))
        .await
        .err()
        .unwrap();
    assert_eq!(env.code(), tonic::Code::NotFound);
    assert!(env.message().contains("nope"), "{}", env.message());
    let nobody = prestart(&lab, request("", &[], "")).await.err().unwrap();
    assert_eq!(nobody.code(), tonic::Code::InvalidArgument);

    // The binary's summary groups the failures and its exit status says so.
    let file = lab.dir.path().join("class.txt");
    std::fs::write(&file, "alice\nBad Name\n").unwrap();
    let out = cli(
        &lab,
        &["--env", "broken", "--users", file.to_str().unwrap()],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("0 created, 0 started, 0 already running, 2 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed (1): invalid login name"),
        "{stdout}"
    );
    assert!(
        stdout.contains("labssh/this-image-does-not-exist:never"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 of 2 containers failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop().await;
}

/// Runs `labssh prestart ARGS` against the lab's controller (plain HTTP/2).
async fn cli(lab: &Lab, args: &[&str]) -> std::process::Output {
    let controller = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .arg("prestart")
        .args(args)
        .args(["--controller", &controller])
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_entry_inside_its_window_prestarts_its_class() {
    // A class two minutes from now (local time, to the minute) with a lead of
    // ten: the controller is inside the window from its start.
    let names = tempfile::tempdir().unwrap();
    let class = names.path().join("lab.txt");
    std::fs::write(&class, "gina\nhank\n").unwrap();
    let at = (chrono::Local::now() + chrono::Duration::minutes(2)).format("%H:%M");
    let lab = Lab::start(LabOptions {
        catalogue: format!(
            "\n[[schedule]]\nname = \"soon\"\nenvironment = \"default\"\nusers_file = \"{}\"\nat = \"{at}\"\nlead = \"10m\"\n",
            class.display()
        ),
        ..Default::default()
    })
    .await;
    for user in ["gina", "hank"] {
        lab.wait_state(user, "default", "running").await;
    }
    assert_eq!(
        lab.container_id("alice", "default"),
        None,
        "not in the class"
    );
    lab.stop().await;
}

/// How many users prestarts in this process dropped because their caller went
/// away (the metric; no other test here cancels one).
fn cancelled() -> u64 {
    labssh_telemetry::metrics::render()
        .lines()
        .find(|l| {
            l.starts_with("labssh_prestart_results_total{") && l.contains("outcome=\"cancelled\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_goes_away_cancels_the_students_not_started_and_the_one_under_way_finishes() {
    // A create hook holds each new container's Ensure until /tmp/go exists in it.
    let lab = Lab::start(LabOptions {
        catalogue: crate::lab::environment_toml(
            "gated",
            "[[environments.gated.hooks]]\non = \"create\"\nas = \"root\"\nrequired = true\ntimeout = \"30s\"\n\
             run = [\"/bin/sh\", \"-c\", \"while [ ! -e /tmp/go ]; do sleep 0.1; done\"]",
        ),
        ..Default::default()
    })
    .await;
    let users = ["pat", "quinn", "ruth"];
    let before = cancelled();
    let client = lab.cluster.as_ref().unwrap().controller_client().unwrap();
    let mut request = request("gated", &users, "");
    request.concurrency = 1;
    let mut stream = client.clone().prestart(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::prestart_event::Event::Planned(_))
    ));

    // One at a time: one container appears, held by its hook.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let under_way = loop {
        let made: Vec<&str> = users
            .into_iter()
            .filter(|u| lab.container_id(u, "gated").is_some())
            .collect();
        assert!(made.len() <= 1, "concurrency 1, yet {made:?}");
        if let [one] = made.as_slice() {
            break one.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no container under way"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    lab.wait_state(&under_way, "gated", "running").await;

    // The caller goes away: the two waiting their turn are dropped.
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cancelled() < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting students were not dropped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The one under way is let through and finishes whole.
    docker(&[
        "exec",
        &lab.container_name(&under_way, "gated"),
        "touch",
        "/tmp/go",
    ])
    .unwrap();
    let again = prestart(&lab, self::request("gated", &[&under_way], ""))
        .await
        .unwrap();
    assert_eq!(
        again.outcome(&under_way),
        Outcome::Already,
        "{:?}",
        again.results
    );
    for user in users.into_iter().filter(|u| *u != under_way) {
        assert_eq!(
            lab.container_id(user, "gated"),
            None,
            "{user} was started after the caller left"
        );
    }
    lab.stop().await;
}
