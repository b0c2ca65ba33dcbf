//! [`KubeBackend`] against the fake API server: what it sends, in what order, what it
//! waits for, and what the student reads when the cluster says no.

use std::sync::Mutex as StdMutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState as KubeState, ContainerStateWaiting, ContainerStatus, PodStatus,
};

use super::*;
use crate::backend::docker::LABEL_USER;
use crate::backend::{ExitStatus, Output, ProcessControl, RunAs, Stdin, StdinSink};
use labssh_testkit::kube_api::Fake;

/// Long enough for anything the fake does at once; a test waiting this long failed.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(extra: &str) -> Config {
    Config::from_toml_str(&format!(
        r#"
name = "node-a"
controller = "http://127.0.0.1:1"
container_prefix = "lab"
backend = "kubernetes"

[kubernetes]
namespace = "students"
init_image = "registry.example.edu/labssh:1.4"
{extra}
"#
    ))
    .expect("a valid config")
}

fn env(name: &str) -> pb::Environment {
    pb::Environment {
        name: name.into(),
        image: "labssh/python:3".into(),
        uid: 1000,
        gid: 1000,
        ..Default::default()
    }
}

/// One `pods/exec`: namespace, pod, container, command.
type ExecCall = (String, String, String, Vec<String>);

/// What the fake `pods/exec` was asked.
#[derive(Default)]
struct Execs(StdMutex<Vec<ExecCall>>);

/// A process that prints "exec" and exits 3.
struct Done;

#[async_trait]
impl ProcessControl for Done {
    async fn resize(&self, _: u16, _: u16) -> Result<(), BackendError> {
        Ok(())
    }
    async fn signal(&self, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn wait(&self) -> Result<ExitStatus, BackendError> {
        Ok(ExitStatus::Code(3))
    }
}

struct Nowhere;

#[async_trait]
impl StdinSink for Nowhere {
    async fn write(&mut self, _: bytes::Bytes) -> std::io::Result<()> {
        Ok(())
    }
    async fn shutdown(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl PodExec for Execs {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        spec: SpawnSpec,
    ) -> Result<Process, BackendError> {
        self.0.lock().unwrap().push((
            namespace.to_owned(),
            pod.to_owned(),
            container.to_owned(),
            spec.argv,
        ));
        Ok(Process {
            stdin: Stdin::new(Nowhere),
            output: futures::stream::iter([Output::Stdout(bytes::Bytes::from_static(b"exec"))])
                .boxed(),
            control: Arc::new(Done),
            path: crate::backend::SpawnPath::Exec,
        })
    }
}

fn backend(extra: &str) -> (KubeBackend, Fake, Arc<Execs>) {
    let (client, fake) = Fake::start();
    let execs = Arc::new(Execs::default());
    let backend = KubeBackend::with_client(client, &config(extra), execs.clone());
    (backend, fake, execs)
}

fn running(id: &str) -> PodStatus {
    labssh_testkit::kube_api::running_status(
        CONTAINER,
        "labssh/python:3",
        "sha256:feed",
        &format!("containerd://{id}"),
        Some("10.244.1.7"),
    )
}

fn waiting(reason: &str, message: &str) -> PodStatus {
    PodStatus {
        phase: Some("Pending".into()),
        container_statuses: Some(vec![ContainerStatus {
            name: CONTAINER.into(),
            image: "labssh/python:3".into(),
            state: Some(KubeState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Plays the kubelet: once a pod `name` exists that is not the one there now (if
/// any), gives it `status`.
fn kubelet(fake: &Fake, name: &str, status: PodStatus) -> tokio::task::JoinHandle<()> {
    let (fake, name) = (fake.clone(), name.to_owned());
    fn uid(fake: &Fake, name: &str) -> Option<String> {
        fake.pod(name).and_then(|p| p.metadata.uid)
    }
    let before = uid(&fake, &name);
    tokio::spawn(async move {
        let until = Instant::now() + PATIENCE;
        loop {
            let now = uid(&fake, &name);
            if (now.is_some() && now != before) || Instant::now() > until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.set_status(&name, status);
    })
}

async fn ensure(
    backend: &KubeBackend,
    user: &str,
    env: &pb::Environment,
) -> Result<Ensured, BackendError> {
    tokio::time::timeout(PATIENCE, backend.ensure(user, env))
        .await
        .expect("the ensure finished")
}

fn writes(fake: &Fake) -> Vec<String> {
    fake.seen()
        .into_iter()
        .filter(|s| !s.starts_with("GET"))
        .collect()
}

#[tokio::test]
async fn a_login_makes_the_home_the_policy_and_the_pod_then_waits_for_it() {
    let (backend, fake, _) = backend("");
    let name = "lab-alice.default";
    let kubelet = kubelet(&fake, name, running("c1"));
    let made = ensure(&backend, "alice", &env("default")).await.unwrap();
    kubelet.await.unwrap();
    assert!(made.created && made.started, "{made:?}");
    assert_eq!(made.name, name);
    assert_eq!(
        writes(&fake),
        [
            "POST persistentvolumeclaims",
            &format!("PATCH networkpolicies/{name}"),
            "POST pods"
        ]
    );
    let pod = fake.pod(name).unwrap();
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a")
    );
    assert_eq!(pod.metadata.namespace.as_deref(), Some("students"));
    assert!(fake.has("persistentvolumeclaims", "lab-home-alice"));

    // The next login finds it running: nothing written.
    let again = ensure(&backend, "alice", &env("default")).await.unwrap();
    assert!(!again.created && !again.started, "{again:?}");
    assert_eq!(writes(&fake).len(), 3);
    let inventory = backend.inventory().await.unwrap();
    assert_eq!(inventory.len(), 1);
    assert_eq!(
        (
            inventory[0].user.as_str(),
            inventory[0].environment.as_str()
        ),
        ("alice", "default")
    );
    assert_eq!(inventory[0].state, ContainerState::Running);
    assert_eq!(
        backend.container_addresses(name).await.unwrap(),
        ["10.244.1.7".parse::<IpAddr>().unwrap()]
    );
}

#[tokio::test]
async fn two_logins_at_once_make_one_pod() {
    let (backend, fake, _) = backend("");
    let kubelet = kubelet(&fake, "lab-bob.default", running("c2"));
    let e = env("default");
    let (a, b) = tokio::join!(ensure(&backend, "bob", &e), ensure(&backend, "bob", &e));
    kubelet.await.unwrap();
    assert!(a.unwrap().created ^ b.unwrap().created);
    assert_eq!(fake.seen().iter().filter(|s| *s == "POST pods").count(), 1);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_told_and_the_pod_removed() {
    let (backend, fake, _) = backend("");
    let name = "lab-carol.default";
    let kubelet = kubelet(
        &fake,
        name,
        waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"labssh/python:3\"",
        ),
    );
    let err = ensure(&backend, "carol", &env("default"))
        .await
        .unwrap_err();
    kubelet.await.unwrap();
    let text = err.to_string();
    assert!(matches!(err, BackendError::StartFailed(_)), "{err:?}");
    assert!(
        text.contains("labssh/python:3") && text.contains("cannot be pulled"),
        "{text}"
    );
    assert!(fake.pod(name).is_none(), "the failed pod was removed");
    assert!(
        fake.has("persistentvolumeclaims", "lab-home-carol"),
        "the home is kept"
    );
}

#[tokio::test]
async fn a_pod_that_never_runs_is_given_up_on_after_the_timeout() {
    let (backend, fake, _) = backend("pod_ready_timeout_secs = 1");
    let err = ensure(&backend, "dave", &env("default")).await.unwrap_err();
    assert!(err.to_string().contains("did not run within 1 s"), "{err}");
    assert!(fake.pod("lab-dave.default").is_none());
    assert!(fake
        .seen()
        .contains(&"DELETE pods/lab-dave.default".to_owned()));
}

#[tokio::test]
async fn refusals_say_what_the_cluster_refused() {
    let (backend, fake, _) = backend("");
    fake.refuse(
        "POST",
        "pods",
        403,
        "pods \"lab-erin.default\" is forbidden: violates PodSecurity \"restricted:latest\"",
    );
    let err = ensure(&backend, "erin", &env("default")).await.unwrap_err();
    assert!(matches!(err, BackendError::CreateFailed(_)), "{err:?}");
    assert!(
        err.to_string().contains("RBAC or Pod Security")
            && err.to_string().contains("violates PodSecurity"),
        "{err}"
    );

    fake.refuse(
        "POST",
        "persistentvolumeclaims",
        403,
        "exceeded quota: students-quota",
    );
    let err = ensure(&backend, "erin", &env("default")).await.unwrap_err();
    assert!(err.to_string().contains("quota is used up"), "{err}");

    fake.refuse(
        "POST",
        "pods",
        422,
        "Pod \"x\" is invalid: spec.containers[0].image: Required value",
    );
    let err = ensure(&backend, "erin", &env("default")).await.unwrap_err();
    assert!(
        err.to_string().contains("refused the pod as invalid"),
        "{err}"
    );
    assert!(fake.pod("lab-erin.default").is_none());
}

#[tokio::test]
async fn stop_deletes_the_pod_and_keeps_the_home_and_start_makes_it_again() {
    let (backend, fake, _) = backend("");
    let name = "lab-frank.default";
    let first = kubelet(&fake, name, running("c3"));
    ensure(&backend, "frank", &env("default")).await.unwrap();
    first.await.unwrap();
    backend.stop(name).await.unwrap();
    assert!(fake.pod(name).is_none());
    assert!(fake.has("persistentvolumeclaims", "lab-home-frank"));
    assert!(backend.inventory().await.unwrap().is_empty());

    let second = kubelet(&fake, name, running("c4"));
    let made = ensure(&backend, "frank", &env("default")).await.unwrap();
    second.await.unwrap();
    assert!(made.created);
    // The claim was asked for again and found there (409), not an error.
    assert_eq!(
        fake.seen()
            .iter()
            .filter(|s| *s == "POST persistentvolumeclaims")
            .count(),
        2
    );
}

#[tokio::test]
async fn remove_deletes_the_pod_and_remove_home_only_that_students_claim() {
    let (backend, fake, _) = backend("");
    let (frank, gina) = ("lab-frank.default", "lab-gina.default");
    for (user, name, id) in [("frank", frank, "c5"), ("gina", gina, "c6")] {
        let up = kubelet(&fake, name, running(id));
        ensure(&backend, user, &env("default")).await.unwrap();
        up.await.unwrap();
    }
    // `labssh container remove frank`: the pod goes, the home stays.
    backend.remove(frank).await.unwrap();
    assert!(fake.pod(frank).is_none());
    assert!(fake.has("persistentvolumeclaims", "lab-home-frank"));
    // `--home`: frank's claim goes; gina's pod and claim stay.
    backend.remove_home("frank").await.unwrap();
    assert!(!fake.has("persistentvolumeclaims", "lab-home-frank"));
    assert!(fake.has("persistentvolumeclaims", "lab-home-gina"));
    assert!(fake.pod(gina).is_some());
    // Removing a home that is gone already is done, not an error.
    backend.remove_home("frank").await.unwrap();
    // The cluster refusing says what was refused.
    fake.refuse(
        "DELETE",
        "persistentvolumeclaims",
        403,
        "persistentvolumeclaims \"lab-home-gina\" is forbidden",
    );
    let err = backend.remove_home("gina").await.unwrap_err().to_string();
    assert!(err.contains("deleting the home claim"), "{err}");
    assert!(err.contains("forbidden"), "{err}");
    assert!(fake.has("persistentvolumeclaims", "lab-home-gina"));
    // A crafted name reaches no claim.
    let before = writes(&fake).len();
    let err = backend.remove_home("../gina").await.unwrap_err();
    assert!(matches!(
        err,
        BackendError::InvalidName { what: "user", .. }
    ));
    assert_eq!(writes(&fake).len(), before, "nothing sent for a bad name");
}

#[tokio::test]
async fn a_pod_the_node_failed_is_made_again() {
    let (backend, fake, _) = backend("");
    let name = "lab-gina.default";
    let first = kubelet(&fake, name, running("c5"));
    ensure(&backend, "gina", &env("default")).await.unwrap();
    first.await.unwrap();
    let mut evicted = PodStatus {
        phase: Some("Failed".into()),
        reason: Some("Evicted".into()),
        ..Default::default()
    };
    evicted.message = Some("The node was low on resource: memory.".into());
    fake.set_status(name, evicted);
    // The watch tells the inventory.
    tokio::time::timeout(PATIENCE, async {
        while backend.inventory().await.unwrap()[0].state != ContainerState::Stopped {
            backend.inventory_changed().await;
        }
    })
    .await
    .expect("the inventory saw the pod fail");
    let again = kubelet(&fake, name, running("c6"));
    let made = ensure(&backend, "gina", &env("default")).await.unwrap();
    again.await.unwrap();
    assert!(made.started && !made.created, "{made:?}");
    assert_eq!(fake.seen().iter().filter(|s| *s == "POST pods").count(), 2);
}

#[tokio::test]
async fn an_outdated_pod_is_recreated_only_when_it_may_be() {
    let (backend, fake, _) = backend("");
    let name = "lab-hana.default";
    let first = kubelet(&fake, name, running("c7"));
    ensure(&backend, "hana", &env("default")).await.unwrap();
    first.await.unwrap();
    let mut newer = env("default");
    newer.image = "labssh/python:3.13".into();
    // Sessions open: used as it is.
    let kept = ensure(&backend, "hana", &newer).await.unwrap();
    assert!(!kept.created);
    let steps = Arc::new(StdMutex::new(Vec::new()));
    let seen = steps.clone();
    let options = EnsureOptions {
        renew: true,
        steps: Some(Arc::new(move |s| seen.lock().unwrap().push(s))),
        admission: None,
    };
    let second = kubelet(&fake, name, running("c8"));
    let made = tokio::time::timeout(PATIENCE, backend.ensure_with("hana", &newer, &options))
        .await
        .unwrap()
        .unwrap();
    second.await.unwrap();
    assert!(made.created);
    assert_eq!(
        *steps.lock().unwrap(),
        [EnsureStep::Recreating(Renewal::Outdated)]
    );
    let pod = fake.pod(name).unwrap();
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("labssh/python:3.13")
    );
}

#[tokio::test]
async fn a_pod_of_someone_else_by_the_name_is_not_used() {
    let (backend, fake, _) = backend("");
    let plan_env = env("default");
    let settings = settings_hash(&plan_env);
    let kube = config("").kubernetes;
    let keepalive = vec!["sleep".to_owned()];
    let plan = PodPlan {
        agent: "node-a",
        prefix: "lab",
        node: "node-a",
        config: &kube,
        user: "ivan",
        env: &plan_env,
        ids: None,
        settings: &settings,
        keepalive_cmd: &keepalive,
    };
    let mut pod = objects::pod(&plan).unwrap();
    // Someone made a pod by ivan's name claiming to be mallory's.
    let annotations = pod.metadata.annotations.as_mut().unwrap();
    annotations.insert(LABEL_USER.to_owned(), "mallory".to_owned());
    fake.insert_pod(pod);
    let err = ensure(&backend, "ivan", &env("default")).await.unwrap_err();
    assert!(matches!(err, BackendError::NameTaken(_)), "{err:?}");
    assert!(!fake
        .seen()
        .iter()
        .any(|s| s.starts_with("DELETE") || s == "POST pods"));
}

#[tokio::test]
async fn the_inventory_holds_this_agents_pods_only() {
    let (backend, fake, _) = backend("");
    let kube = config("").kubernetes;
    let e = env("default");
    let keepalive = vec!["sleep".to_owned()];
    for agent in ["node-a", "node-b"] {
        let plan = PodPlan {
            agent,
            prefix: "lab",
            node: agent,
            config: &kube,
            user: if agent == "node-a" { "judy" } else { "kim" },
            env: &e,
            ids: None,
            settings: "x",
            keepalive_cmd: &keepalive,
        };
        fake.insert_pod(objects::pod(&plan).unwrap());
    }
    let inventory = backend.inventory().await.unwrap();
    assert_eq!(inventory.len(), 1, "{inventory:?}");
    assert_eq!(inventory[0].user, "judy");
    assert_eq!(inventory[0].state, ContainerState::Creating);
}

#[tokio::test]
async fn bad_names_are_refused_before_anything_is_sent() {
    let (backend, fake, _) = backend("");
    let err = ensure(&backend, "../x", &env("default")).await.unwrap_err();
    assert!(matches!(
        err,
        BackendError::InvalidName { what: "user", .. }
    ));
    let err = ensure(&backend, "alice", &env("no/such"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        BackendError::InvalidName {
            what: "environment",
            ..
        }
    ));
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn pausing_says_kubernetes_cannot() {
    let (backend, _, _) = backend("");
    assert!(!backend.can_pause(), "the idle loop must only stop pods");
    let err = backend.pause("lab-alice.default").await.unwrap_err();
    assert!(
        err.to_string().contains("Kubernetes cannot freeze a pod"),
        "{err}"
    );
}

#[tokio::test]
async fn exec_pods_run_processes_through_pods_exec_and_helper_pods_never_do() {
    let (backend, fake, execs) = backend("");
    let mut exec_env = env("plain");
    exec_env.spawn = "exec".into();
    let kubelet_exec = kubelet(&fake, "lab-lee.plain", running("c9"));
    ensure(&backend, "lee", &exec_env).await.unwrap();
    kubelet_exec.await.unwrap();
    let spec = SpawnSpec {
        argv: vec!["id".into()],
        env: Vec::new(),
        pty: None,
        run_as: RunAs::Ids {
            uid: 1000,
            gid: 1000,
        },
        workdir: None,
        keep: None,
    };
    let process = backend.spawn("lab-lee.plain", spec.clone()).await.unwrap();
    assert_eq!(process.control.wait().await.unwrap(), ExitStatus::Code(3));
    assert_eq!(
        execs.0.lock().unwrap().as_slice(),
        [(
            "students".to_owned(),
            "lab-lee.plain".to_owned(),
            CONTAINER.to_owned(),
            vec!["id".to_owned()]
        )]
    );

    // A helper pod whose helper is not on this node (no such container here): an
    // error, not pods/exec, which would run as root with the helper's capabilities.
    let kubelet_helper = kubelet(&fake, "lab-lee.default", running("not-on-this-node"));
    ensure(&backend, "lee", &env("default")).await.unwrap();
    kubelet_helper.await.unwrap();
    let err = backend
        .spawn("lab-lee.default", spec.clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, BackendError::SpawnFailed(_)), "{err:?}");
    assert_eq!(execs.0.lock().unwrap().len(), 1);

    // A pod that is not running cannot be worked in.
    let err = backend
        .spawn("lab-nobody.default", spec)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn an_environments_own_seccomp_profile_is_on_the_node_before_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, fake, _) = backend(&format!("seccomp_dir = {:?}", dir.path().to_str().unwrap()));
    let mut strict = env("strict");
    let profile = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}"#;
    strict.isolation = Some(pb::Isolation {
        seccomp: profile.into(),
        ..Default::default()
    });
    let kubelet = kubelet(&fake, "lab-mia.strict", running("c10"));
    ensure(&backend, "mia", &strict).await.unwrap();
    kubelet.await.unwrap();
    let pod = fake.pod("lab-mia.strict").unwrap();
    let named = pod
        .spec
        .unwrap()
        .security_context
        .unwrap()
        .seccomp_profile
        .unwrap();
    assert_eq!(named.type_, "Localhost");
    let path = dir.path().join(named.localhost_profile.unwrap());
    assert_eq!(std::fs::read_to_string(path).unwrap(), profile);
}

/// Waits until the inventory shows `user`'s pod in `state`.
async fn inventory_shows(backend: &KubeBackend, user: &str, state: ContainerState) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let changed = backend.inventory_changed();
            let inventory = backend.inventory().await.unwrap();
            if inventory.iter().any(|c| c.user == user && c.state == state) {
                return;
            }
            // A watch event, or a relist after the watch broke.
            let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
        }
    })
    .await
    .expect("the inventory caught up");
}

fn pod_of(user: &str, env: &pb::Environment) -> Pod {
    let settings = settings_hash(env);
    let kube = config("").kubernetes;
    let keepalive = vec!["sleep".to_owned()];
    objects::pod(&PodPlan {
        agent: "node-a",
        prefix: "lab",
        node: "node-a",
        config: &kube,
        user,
        env,
        ids: None,
        settings: &settings,
        keepalive_cmd: &keepalive,
    })
    .unwrap()
}

#[tokio::test]
async fn a_watch_that_broke_is_resumed_by_listing_again() {
    let (backend, fake, _) = backend("");
    let name = "lab-nora.default";
    let kubelet = kubelet(&fake, name, running("c11"));
    ensure(&backend, "nora", &env("default")).await.unwrap();
    kubelet.await.unwrap();
    inventory_shows(&backend, "nora", ContainerState::Running).await;
    // The pod fails while no watch hears of it, and the history before is gone: the
    // reflector's next watch is told 410 Gone, lists again and finds it.
    let failed = PodStatus {
        phase: Some("Failed".into()),
        reason: Some("Evicted".into()),
        ..Default::default()
    };
    fake.set_status_unwatched(name, failed);
    fake.drop_watches();
    inventory_shows(&backend, "nora", ContainerState::Stopped).await;
    let lists = fake.seen().iter().filter(|s| *s == "GET pods").count();
    assert!(lists >= 2, "listed again: {:?}", fake.seen());
}

#[tokio::test]
async fn a_pod_there_already_is_used_once_the_watch_shows_it() {
    let (backend, fake, _) = backend("");
    let name = "lab-olga.default";
    // The API server has the pod; the watch has not shown it yet.
    fake.refuse(
        "POST",
        "pods",
        409,
        "pods \"lab-olga.default\" already exists",
    );
    let late = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while !fake.seen().iter().any(|s| s == "POST pods") {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            fake.insert_pod(pod_of("olga", &env("default")));
            fake.set_status(name, running("c12"));
        })
    };
    let made = ensure(&backend, "olga", &env("default")).await.unwrap();
    late.await.unwrap();
    assert_eq!(made.name, name);

    // Someone else's by that name: not used.
    fake.refuse(
        "POST",
        "pods",
        409,
        "pods \"lab-pia.default\" already exists",
    );
    let theirs = {
        let fake = fake.clone();
        tokio::spawn(async move {
            while fake.seen().iter().filter(|s| *s == "POST pods").count() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut pod = pod_of("pia", &env("default"));
            let annotations = pod.metadata.annotations.as_mut().unwrap();
            annotations.insert(LABEL_USER.to_owned(), "mallory".to_owned());
            fake.insert_pod(pod);
        })
    };
    let err = ensure(&backend, "pia", &env("default")).await.unwrap_err();
    theirs.await.unwrap();
    assert!(matches!(err, BackendError::NameTaken(_)), "{err:?}");
}

#[tokio::test]
async fn a_node_not_ready_is_told_and_its_pod_left_alone() {
    let (backend, fake, _) = backend("");
    let name = "lab-quinn.default";
    let kubelet = kubelet(&fake, name, running("c13"));
    ensure(&backend, "quinn", &env("default")).await.unwrap();
    kubelet.await.unwrap();
    fake.set_status(
        name,
        PodStatus {
            phase: Some("Unknown".into()),
            ..Default::default()
        },
    );
    inventory_shows(&backend, "quinn", ContainerState::Stopped).await;
    let err = ensure(&backend, "quinn", &env("default"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node-a is not ready"), "{err}");
    assert!(!fake.seen().iter().any(|s| s.starts_with("DELETE")));
}
