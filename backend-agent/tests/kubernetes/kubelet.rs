//! `KubeBackend` end to end with Docker as the kubelet: the backend asks the fake API
//! server for a claim, a NetworkPolicy and a pod; [`Kubelet`] runs each new pod from
//! its spec with Docker (volumes, the init container, the student container's
//! command, user, groups, capabilities, no-new-privileges, read-only mounts) and
//! reports it running with its `docker://` container id, as a kubelet reports
//! `containerd://` ones; a deleted pod's container is removed. Everything after that
//! is the agent's real path: the reflector, the pod's labssh-init found from the
//! container id, sessions and listeners through it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodStatus, SecurityContext};
use labssh_agent::backend::kubernetes::{KubeBackend, PodExec};
use labssh_agent::backend::{
    Backend, BackendError, ExitStatus, Output, Process, RunAs, SpawnPath, SpawnSpec,
};
use labssh_agent::config::Config;
use labssh_proto::pb;
use labssh_testkit::kube_api::Fake;
use rand::Rng;
use tokio::io::AsyncBufReadExt;

use crate::pod_helper::{binaries, docker, docker_ok, IMAGE, STEP};

/// The init image the agent is configured with; the kubelet runs it as busybox with
/// the built binaries where the agent's image has them.
const INIT_IMAGE: &str = "registry.example.edu/labssh:test";

/// Runs the fake API server's pods with Docker until dropped, then removes every
/// container and volume it made.
struct Kubelet {
    /// Label value on everything it makes.
    tag: String,
    /// Set to end the loop.
    stop: Arc<AtomicBool>,
    /// The loop.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubelet {
    fn start(fake: &Fake) -> Kubelet {
        let tag = format!("labsshkubelet{:08x}", rand::thread_rng().gen::<u32>());
        let stop = Arc::new(AtomicBool::new(false));
        let (fake, looping, label) = (fake.clone(), stop.clone(), tag.clone());
        let thread = std::thread::spawn(move || {
            // Pod uid → container id.
            let mut running: HashMap<String, String> = HashMap::new();
            let mut failed: HashSet<String> = HashSet::new();
            while !looping.load(Ordering::Relaxed) {
                let pods = fake.pods();
                let present: HashSet<String> =
                    pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                running.retain(|uid, id| {
                    let keep = present.contains(uid);
                    if !keep {
                        docker(&["rm", "-f", id]);
                    }
                    keep
                });
                for pod in pods {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if running.contains_key(&uid) || failed.contains(&uid) {
                        continue;
                    }
                    match run_pod(&label, &pod) {
                        Ok((id, ip)) => {
                            let name = pod.metadata.name.clone().unwrap_or_default();
                            fake.set_status(&name, status(&id, &ip));
                            running.insert(uid, id);
                        }
                        Err(why) => {
                            eprintln!("kubelet: {why}");
                            failed.insert(uid);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        });
        Kubelet {
            tag,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let filter = format!("label=labssh.test={}", self.tag);
        let (_, ids, _) = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        let (_, volumes, _) = docker(&["volume", "ls", "-q", "--filter", &filter]);
        for volume in volumes.split_whitespace() {
            docker(&["volume", "rm", "-f", volume]);
        }
    }
}

/// The status a kubelet reports for a pod whose student container `id` runs.
fn status(id: &str, ip: &str) -> PodStatus {
    labssh_testkit::kube_api::running_status(
        "student",
        IMAGE,
        "docker-pullable://labssh/busybox",
        &format!("docker://{id}"),
        (!ip.is_empty()).then_some(ip),
    )
}

/// Runs `pod` as a kubelet would: its volumes, its init containers to completion,
/// then its student container; returns that container's id and IP.
fn run_pod(tag: &str, pod: &Pod) -> Result<(String, String), String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("a pod without a spec")?;
    let pod_security = spec.security_context.clone().unwrap_or_default();
    let label = format!("labssh.test={tag}");
    // Pod volume name → Docker volume, made as the kubelet makes them: emptyDirs
    // world-writable, claims (kept across pods) given the fsGroup.
    let mut volumes = HashMap::new();
    for volume in spec.volumes.iter().flatten() {
        let (docker_name, mode) = if let Some(claim) = &volume.persistent_volume_claim {
            (format!("{tag}-claim-{}", claim.claim_name), "2775")
        } else if volume.empty_dir.is_some() {
            (format!("{tag}-{name}-{}", volume.name), "0777")
        } else {
            return Err(format!(
                "volume {} is neither a claim nor an emptyDir",
                volume.name
            ));
        };
        let (exists, _, _) = docker(&["volume", "inspect", &docker_name]);
        if exists != 0 {
            docker_ok(&["volume", "create", "--label", &label, &docker_name]);
        }
        let group = pod_security.fs_group.unwrap_or(0).to_string();
        docker_ok(&[
            "run",
            "--rm",
            "--label",
            &label,
            "-v",
            &format!("{docker_name}:/v"),
            IMAGE,
            "sh",
            "-c",
            &format!("chown 0:{group} /v && chmod {mode} /v"),
        ]);
        volumes.insert(volume.name.clone(), docker_name);
    }
    for init in spec.init_containers.iter().flatten() {
        let mut args = vec!["run".to_owned(), "--rm".to_owned()];
        args.extend(container_args(&label, init, &pod_security, &volumes)?);
        let (code, _, err) = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if code != 0 {
            return Err(format!(
                "init container {} of {name} failed: {err}",
                init.name
            ));
        }
    }
    let student = spec.containers.first().ok_or("a pod without containers")?;
    let mut args = vec!["run".to_owned(), "-d".to_owned()];
    if let Some(hostname) = &spec.hostname {
        args.extend(["--hostname".to_owned(), hostname.clone()]);
    }
    args.extend(container_args(&label, student, &pod_security, &volumes)?);
    let (code, out, err) = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    if code != 0 {
        return Err(format!(
            "the student container of {name} did not start: {err}"
        ));
    }
    let id = out.trim().to_owned();
    let ip = docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id]);
    Ok((id, ip))
}

/// `docker run` options and command for `container` of a pod.
fn container_args(
    label: &str,
    container: &Container,
    pod: &PodSecurityContext,
    volumes: &HashMap<String, String>,
) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = vec!["--label".into(), label.into()];
    let sc: SecurityContext = container.security_context.clone().unwrap_or_default();
    let user = sc.run_as_user.or(pod.run_as_user);
    let group = sc.run_as_group.or(pod.run_as_group);
    if let Some(user) = user {
        args.extend(["--user".into(), format!("{user}:{}", group.unwrap_or(0))]);
    }
    if let Some(fs_group) = pod.fs_group {
        args.extend(["--group-add".into(), fs_group.to_string()]);
    }
    if let Some(caps) = &sc.capabilities {
        for cap in caps.drop.iter().flatten() {
            args.extend(["--cap-drop".into(), cap.clone()]);
        }
        for cap in caps.add.iter().flatten() {
            args.extend(["--cap-add".into(), cap.clone()]);
        }
    }
    if sc.allow_privilege_escalation == Some(false) {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if sc.read_only_root_filesystem == Some(true) {
        args.push("--read-only".into());
    }
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(&mount.name)
            .ok_or_else(|| format!("mount of an unknown volume {}", mount.name))?;
        let ro = if mount.read_only == Some(true) {
            ":ro"
        } else {
            ""
        };
        args.extend(["-v".into(), format!("{volume}:{}{ro}", mount.mount_path)]);
    }
    let image = container.image.clone().unwrap_or_default();
    if image == INIT_IMAGE {
        // The agent's image: busybox with the built binaries where it has them.
        let (init, sftp) = binaries();
        args.extend(["-v".into(), format!("{init}:/labssh-init:ro")]);
        args.extend(["-v".into(), format!("{sftp}:/labssh-sftp:ro")]);
    } else if image != IMAGE {
        return Err(format!("image {image} is not on this machine"));
    }
    let command = container.command.clone().unwrap_or_default();
    let (entry, rest) = command
        .split_first()
        .ok_or("a container without a command")?;
    args.extend(["--entrypoint".into(), entry.clone(), IMAGE.into()]);
    args.extend(rest.iter().cloned());
    Ok(args)
}

/// `pods/exec` must not be used for pods made for labssh-init.
struct NoExec;

#[async_trait::async_trait]
impl PodExec for NoExec {
    async fn exec(
        &self,
        _: &str,
        pod: &str,
        _: &str,
        _: SpawnSpec,
    ) -> Result<Process, BackendError> {
        panic!("pods/exec was used for {pod}, whose pod runs labssh-init");
    }
}

fn backend(fake_client: kube::Client, pod_security: &str) -> KubeBackend {
    let config = Config::from_toml_str(&format!(
        r#"
name = "node-a"
controller = "http://127.0.0.1:1"
container_prefix = "lab"
backend = "kubernetes"

[kubernetes]
namespace = "students"
init_image = "{INIT_IMAGE}"
pod_security = "{pod_security}"
pod_ready_timeout_secs = 60
"#
    ))
    .expect("a valid config");
    KubeBackend::with_client(fake_client, &config, Arc::new(NoExec))
}

fn env() -> pb::Environment {
    pb::Environment {
        name: "default".into(),
        image: IMAGE.into(),
        uid: 1000,
        gid: 1000,
        keepalive_cmd: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    }
}

fn as_student(user: &str, script: &str) -> SpawnSpec {
    SpawnSpec::for_user(
        user,
        &env(),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
        [("PATH".to_owned(), "/bin:/usr/bin".to_owned())],
        None,
    )
}

/// What `spec` in `pod` prints on stdout, and how it ended.
async fn run(backend: &KubeBackend, pod: &str, spec: SpawnSpec) -> (String, ExitStatus) {
    let Process {
        stdin,
        mut output,
        control,
        path,
    } = backend.spawn(pod, spec).await.expect("spawned");
    assert_eq!(path, SpawnPath::Helper, "through the pod's labssh-init");
    drop(stdin);
    let mut out = Vec::new();
    tokio::time::timeout(STEP, async {
        while let Some(chunk) = output.next().await {
            if let Output::Stdout(b) = chunk {
                out.extend_from_slice(&b);
            }
        }
    })
    .await
    .expect("output ends in time");
    let status = tokio::time::timeout(STEP, control.wait())
        .await
        .expect("exit in time")
        .expect("status");
    (String::from_utf8_lossy(&out).trim().to_owned(), status)
}

async fn ensure(backend: &KubeBackend, user: &str) -> String {
    let made = tokio::time::timeout(Duration::from_secs(90), backend.ensure(user, &env()))
        .await
        .expect("ensured in time")
        .expect("ensured");
    made.container_id
}

#[tokio::test]
async fn baseline_pods_serve_sessions_listeners_and_keep_homes_through_their_helper() {
    let (client, fake) = Fake::start();
    let _kubelet = Kubelet::start(&fake);
    let backend = backend(client, "baseline");
    let pod = ensure(&backend, "alice").await;
    assert_eq!(pod, "lab-alice.default");
    // The student, by name (labssh-init added them to /etc/passwd), in a home of theirs.
    let (out, status) = run(
        &backend,
        &pod,
        as_student(
            "alice",
            "id -un; id -u; cd && echo kept > notes && cat notes",
        ),
    )
    .await;
    assert_eq!(
        (out.as_str(), status),
        ("alice\n1000\nkept", ExitStatus::Code(0))
    );

    // ssh -R: a listener in the pod's network, reached from inside it.
    let listener = backend
        .listen_tcp(&pod, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("listening in the pod");
    let port = listener.local_addr().unwrap().port();
    let sender = as_student("alice", &format!("echo through | nc 127.0.0.1 {port}"));
    let connecting = backend.spawn(&pod, sender).await.expect("spawned");
    let (stream, _) = tokio::time::timeout(STEP, listener.accept())
        .await
        .expect("accepted in time")
        .unwrap();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::time::timeout(STEP, reader.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    assert_eq!(line, "through\n");
    // Closing our end lets nc exit.
    drop(reader);
    drop(connecting.stdin);
    let mut output = connecting.output;
    tokio::time::timeout(STEP, async { while output.next().await.is_some() {} })
        .await
        .expect("nc ended in time");
    let status = tokio::time::timeout(STEP, connecting.control.wait())
        .await
        .unwrap();
    assert_eq!(status.unwrap(), ExitStatus::Code(0));

    // Stop deletes the pod; the next login makes a new one, with the same home.
    backend.stop(&pod).await.unwrap();
    assert!(fake.pod(&pod).is_none());
    let again = ensure(&backend, "alice").await;
    let (out, _) = run(&backend, &again, as_student("alice", "cat ~/notes")).await;
    assert_eq!(out, "kept");
}

#[tokio::test]
async fn restricted_pods_run_everything_as_the_student_and_refuse_root() {
    let (client, fake) = Fake::start();
    let _kubelet = Kubelet::start(&fake);
    let backend = backend(client, "restricted");
    let pod = ensure(&backend, "carol").await;
    let (out, status) = run(
        &backend,
        &pod,
        as_student("carol", "id -u; id -g; touch ~/x"),
    )
    .await;
    assert_eq!((out.as_str(), status), ("1000\n1000", ExitStatus::Code(0)));
    let mut root = as_student("carol", "id -u");
    root.run_as = RunAs::Root;
    let err = backend.spawn(&pod, root).await.err().expect("refused");
    assert!(
        err.to_string().contains("cannot start processes as uid 0"),
        "{err}"
    );
    // Nor as another student.
    let mut other = as_student("carol", "id -u");
    other.run_as = RunAs::Ids {
        uid: 1001,
        gid: 1001,
    };
    let err = backend.spawn(&pod, other).await.err().expect("refused");
    assert!(err.to_string().contains("uid 1001"), "{err}");
}

#[tokio::test]
async fn tenants_pods_share_no_home_socket_or_process() {
    let (client, fake) = Fake::start();
    let _kubelet = Kubelet::start(&fake);
    let backend = backend(client, "baseline");
    let (alice, bob) = tokio::join!(ensure(&backend, "alice"), ensure(&backend, "bob"));
    let (_, status) = run(&backend, &bob, as_student("bob", "echo secret > ~/secret")).await;
    assert_eq!(status, ExitStatus::Code(0));
    // From alice's pod: only her home, not even her own helper's socket directory
    // (labssh-init made it root's), and no process but her own and the helper.
    let (out, _) = run(
        &backend,
        &alice,
        as_student(
            "alice",
            "ls /home; ls /.labssh/run 2>/dev/null || echo closed; ps -o user= | sort -u | tr '\\n' ' '",
        ),
    )
    .await;
    assert_eq!(out, "alice\nclosed\nalice root", "{out}");
    // Bob's file is his: as alice, even naming its path finds nothing.
    let (out, status) = run(
        &backend,
        &alice,
        as_student("alice", "test -e /home/bob/secret"),
    )
    .await;
    assert_eq!((out.as_str(), status), ("", ExitStatus::Code(1)));
}

/// Polls the listeners of `pod` until `done` holds of them; the last reading.
async fn listeners_until(
    backend: &KubeBackend,
    pod: &str,
    done: impl Fn(&[std::net::SocketAddr]) -> bool,
) -> Vec<std::net::SocketAddr> {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let found = backend.listeners(pod).await.expect("listeners read");
        if done(&found) {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "still {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Discovery in a pod: the ports its processes listen on, read from the pod's own
/// socket tables by its labssh-init, appear while they listen, are gone once they
/// stop, and are that pod's alone.
#[tokio::test]
async fn the_ports_listening_in_a_pod_are_read_through_its_helper_and_are_its_own() {
    let (client, fake) = Fake::start();
    let _kubelet = Kubelet::start(&fake);
    let backend = backend(client, "baseline");
    let (alice, bob) = tokio::join!(ensure(&backend, "alice"), ensure(&backend, "bob"));
    assert_eq!(backend.listeners(&alice).await.unwrap(), Vec::new());
    // busybox httpd goes to the background itself and outlives the session.
    let (_, status) = run(
        &backend,
        &alice,
        as_student(
            "alice",
            "httpd -p 8080 -h /tmp && httpd -p 127.0.0.1:9090 -h /tmp",
        ),
    )
    .await;
    assert_eq!(status, ExitStatus::Code(0));
    let found = listeners_until(&backend, &alice, |f| f.len() >= 2).await;
    let ports: Vec<(u16, bool)> = found
        .iter()
        .map(|a| (a.port(), a.ip().is_loopback()))
        .collect();
    assert_eq!(ports, [(8080, false), (9090, true)], "{found:?}");
    assert!(found[0].ip().is_unspecified(), "{found:?}");
    // Bob's pod, its own network: none of alice's.
    assert_eq!(backend.listeners(&bob).await.unwrap(), Vec::new());
    let (_, status) = run(&backend, &alice, as_student("alice", "killall httpd")).await;
    assert_eq!(status, ExitStatus::Code(0));
    listeners_until(&backend, &alice, <[std::net::SocketAddr]>::is_empty).await;
}

#[tokio::test]
async fn a_kept_session_resumes_through_the_pods_helper_by_its_id_only() {
    let (client, fake) = Fake::start();
    let _kubelet = Kubelet::start(&fake);
    let backend = backend(client, "baseline");
    let (dana, erin) = tokio::join!(ensure(&backend, "dana"), ensure(&backend, "erin"));
    let id = "0123456789abcdef0123456789abcd07";
    let mut spec = as_student("dana", "echo k1; read l; echo \"got $l\"; exit 4");
    spec.pty = Some(labssh_agent::backend::PtySpec {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
    });
    spec.keep = Some(labssh_helper_proto::wire::Keep {
        id: id.into(),
        grace_secs: 30,
    });
    let mut process = backend.spawn(&dana, spec).await.expect("spawned");
    assert!(process.control.kept());
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("k1\r\n") {
        match tokio::time::timeout(STEP, process.output.next())
            .await
            .unwrap()
        {
            Some(Output::Stdout(b)) => seen.extend_from_slice(&b),
            other => panic!("{other:?}"),
        }
    }
    // The agent goes; its successor takes the session over, in dana's pod only.
    drop(process);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = backend.reattach(&erin, id, 0).await.err().expect("refused");
    assert!(err.to_string().contains("no such session"), "{err}");
    let (mut process, attached) = backend
        .reattach(&dana, id, seen.len() as u64)
        .await
        .expect("re-attached");
    assert!(attached.pty && attached.counted && attached.lost == 0);
    process.stdin.write_all(b"z\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, async {
        while let Some(chunk) = process.output.next().await {
            if let Output::Stdout(b) = chunk {
                rest.extend_from_slice(&b);
            }
        }
    })
    .await
    .expect("output ends in time");
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("k1"), "nothing twice: {rest:?}");
    assert!(rest.contains("got z"), "{rest:?}");
    let status = tokio::time::timeout(STEP, process.control.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, ExitStatus::Code(4));
}
