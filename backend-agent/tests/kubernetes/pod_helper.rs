//! labssh-init as a Kubernetes pod runs it, with Docker standing in for the kubelet:
//! a volume for the binaries filled by `labssh-init --install` in an "init container"
//! (the built labssh-init and labssh-sftp bound in as the agent's image has them),
//! then the student container running the installed `/.labssh/init` as PID 1 with the
//! volume read-only at `/.labssh` and a second volume at `/.labssh/run`, both
//! world-writable as the kubelet makes an emptyDir (Docker's `--tmpfs` there would
//! take the mode of the directory it covers), under each Pod Security level's
//! settings. The agent's side is the
//! real one: `locate::init_pid` finds the init from the container id, `HelperSocket`
//! reaches it through `/proc/PID/root`.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use labssh_agent::backend::helper::{HelperError, HelperSocket, Pipes};
use labssh_agent::backend::kubernetes::locate;
use labssh_agent::backend::{ExitStatus, Output, Process, PtySpec, RunAs, SpawnSpec};
use rand::Rng;

/// The image the student's container runs.
pub(crate) const IMAGE: &str = "labssh/busybox:latest";
/// Bound on any one step, so a broken test fails instead of hanging.
pub(crate) const STEP: Duration = Duration::from_secs(30);
/// The student's ids.
const STUDENT: (u32, u32) = (1000, 1000);
/// The helper's capabilities at `baseline`, as numbers (Docker's `HELPER_CAPS`).
const HELPER_CAP_NUMBERS: &str = "5,6,7,8";

/// labssh-init and labssh-sftp as backend-agent/build.rs built them.
pub(crate) fn binaries() -> (&'static str, &'static str) {
    match (
        option_env!("LABSSH_INIT_BUILT"),
        option_env!("LABSSH_SFTP_BUILT"),
    ) {
        (Some(init), Some(sftp)) => (init, sftp),
        _ => panic!(
            "backend-agent/build.rs did not build labssh-init and labssh-sftp (LABSSH_SKIP_*_BUILD set?)"
        ),
    }
}

/// Runs the docker CLI: (exit code, stdout, stderr).
pub(crate) fn docker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the docker CLI, which must succeed; returns stdout trimmed.
pub(crate) fn docker_ok(args: &[&str]) -> String {
    let (code, out, err) = docker(args);
    assert_eq!(code, 0, "docker {}: {err}", args.join(" "));
    out.trim().to_owned()
}

/// One test's pod: a unique prefix labelling every container and volume it makes,
/// all removed when dropped, also when the test fails.
struct Pod {
    /// Name prefix and label value.
    prefix: String,
}

impl Pod {
    fn new() -> Pod {
        let tag: u32 = rand::thread_rng().gen();
        let pod = Pod {
            prefix: format!("labsshpod{tag:08x}"),
        };
        for volume in [pod.bin(), pod.run()] {
            docker_ok(&["volume", "create", "--label", &pod.label(), &volume]);
        }
        // The kubelet makes an emptyDir world-writable.
        docker_ok(&[
            "run",
            "--rm",
            "--label",
            &pod.label(),
            "-v",
            &format!("{}:/bin-dir", pod.bin()),
            "-v",
            &format!("{}:/run-dir", pod.run()),
            IMAGE,
            "chmod",
            "0777",
            "/bin-dir",
            "/run-dir",
        ]);
        pod
    }

    /// The label every object of this pod carries.
    fn label(&self) -> String {
        format!("labssh.test={}", self.prefix)
    }

    /// The binaries' volume, the pod's `labssh-bin` emptyDir.
    fn bin(&self) -> String {
        format!("{}-bin", self.prefix)
    }

    /// The socket's volume, the pod's `labssh-run` emptyDir.
    fn run(&self) -> String {
        format!("{}-run", self.prefix)
    }

    /// Runs the init container: `/labssh-init --install /.labssh` from an image
    /// holding `/labssh-init` and (unless `without_sftp`) `/labssh-sftp`, with
    /// `security` (docker run options); returns (exit code, stderr).
    fn install(&self, security: &[&str], without_sftp: bool) -> (i32, String) {
        let (init, sftp) = binaries();
        let init_bind = format!("{init}:/labssh-init:ro");
        let sftp_bind = format!("{sftp}:/labssh-sftp:ro");
        let bin = format!("{}:/.labssh", self.bin());
        let label = self.label();
        let mut args = vec!["run", "--rm", "--label", &label, "--read-only"];
        args.extend(security);
        args.extend(["-v", &init_bind, "-v", &bin]);
        if !without_sftp {
            args.extend(["-v", &sftp_bind]);
        }
        args.extend([IMAGE, "/labssh-init", "--install", "/.labssh"]);
        let (code, _, err) = docker(&args);
        (code, err)
    }

    /// Starts the student container `name` as the pod would with `security` (docker
    /// run options) and labssh-init's own `init_args`; returns its full id.
    fn start(&self, name: &str, security: &[&str], init_args: &[&str]) -> String {
        let name = format!("{}-{name}", self.prefix);
        let bin = format!("{}:/.labssh:ro", self.bin());
        let run = format!("{}:/.labssh/run", self.run());
        let label = self.label();
        let mut args = vec!["run", "-d", "--name", &name, "--label", &label];
        args.extend(security);
        args.extend([
            "-v",
            &bin,
            "-v",
            &run,
            IMAGE,
            "/.labssh/init",
            "--socket",
            "/.labssh/run/helper.sock",
        ]);
        args.extend(init_args);
        args.extend(["--", "sleep", "3600"]);
        docker_ok(&args)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label());
        let (_, ids, _) = docker(&["ps", "-aq", "--filter", &filter]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        docker(&["volume", "rm", "-f", &self.bin(), &self.run()]);
    }
}

/// The docker run options of the `restricted` level: the whole pod as the student, no
/// capabilities, no privilege escalation.
fn restricted() -> Vec<String> {
    let user = format!("{}:{}", STUDENT.0, STUDENT.1);
    [
        "--user",
        &user,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The docker run options of the `baseline` level: root with the helper's
/// capabilities only.
fn baseline() -> Vec<String> {
    let mut args = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        .map(str::to_owned)
        .to_vec();
    for cap in ["KILL", "SETGID", "SETUID", "SETPCAP"] {
        args.extend(["--cap-add".to_owned(), cap.to_owned()]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The helper of container `id`, found as the agent finds a pod's: its init's host
/// pid from the container id, checked against what Docker says.
fn helper_of(id: &str) -> HelperSocket {
    let pid = locate::init_pid(&format!("docker://{id}")).expect("init found");
    let docker_pid: u32 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", id])
        .parse()
        .unwrap();
    assert_eq!(pid, docker_pid, "the container's PID 1 as the host sees it");
    HelperSocket::of_init(pid, id).expect("helper socket")
}

/// `sh -c script` through the helper as `run_as`: (stdout, stderr, status).
async fn sh(
    helper: &HelperSocket,
    run_as: RunAs,
    script: &str,
) -> Result<(String, String, ExitStatus), HelperError> {
    sh_on(helper, run_as, script, None).await
}

/// [`sh`] with a terminal, when `pty` says so.
async fn sh_on(
    helper: &HelperSocket,
    run_as: RunAs,
    script: &str,
    pty: Option<PtySpec>,
) -> Result<(String, String, ExitStatus), HelperError> {
    let spec = SpawnSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/bin:/usr/bin".into())],
        pty,
        run_as,
        workdir: None,
        keep: None,
    };
    let ready_by = tokio::time::Instant::now() + STEP;
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = helper.spawn(&spec, ready_by, Pipes::Handed).await?;
    drop(stdin);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    tokio::time::timeout(STEP, async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
    })
    .await
    .expect("output ends in time");
    let status = tokio::time::timeout(STEP, control.wait())
        .await
        .expect("exit in time")
        .expect("exit status");
    Ok((
        String::from_utf8_lossy(&out).trim().to_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        status,
    ))
}

/// What a script as the student prints, asserting it exits 0.
async fn student_says(helper: &HelperSocket, script: &str) -> String {
    let ids = RunAs::Ids {
        uid: STUDENT.0,
        gid: STUDENT.1,
    };
    let (out, err, status) = sh(helper, ids, script).await.expect("spawned");
    assert_eq!(status, ExitStatus::Code(0), "{script}: {err}");
    out
}

#[tokio::test]
async fn restricted_the_helper_runs_as_the_student_and_starts_only_the_student() {
    let pod = Pod::new();
    let security = restricted();
    let (code, err) = pod.install(&strs(&security), false);
    assert_eq!(code, 0, "install as the student: {err}");
    let ids = format!("{}:{}", STUDENT.0, STUDENT.1);
    let id = pod.start("restricted", &strs(&security), &["--user", &ids]);
    let helper = helper_of(&id);

    assert_eq!(student_says(&helper, "id -u; id -g").await, "1000\n1000");
    // A terminal too: its slave is the student's.
    let pty = PtySpec {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
    };
    let student = RunAs::Ids {
        uid: STUDENT.0,
        gid: STUDENT.1,
    };
    let (out, _, status) = sh_on(&helper, student, "stat -c %u \"$(tty)\"", Some(pty))
        .await
        .unwrap();
    assert_eq!((out.trim(), status), ("1000", ExitStatus::Code(0)));
    let refused = sh(&helper, RunAs::Root, "id -u").await.unwrap_err();
    assert_eq!(
        refused,
        HelperError::Failed(
            "this pod's helper runs as uid 1000 and cannot start processes as uid 0".into()
        )
    );
    let other_gid = RunAs::Ids {
        uid: STUDENT.0,
        gid: 0,
    };
    let refused = sh(&helper, other_gid, "id -g")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("gid 1000") && refused.contains("gid 0"),
        "{refused}"
    );

    // The socket's directory stays as the kubelet made it (the helper cannot change
    // it), and the student's processes cannot read the helper's memory or
    // environment, though they run as the same user.
    assert_eq!(
        student_says(&helper, "stat -c %a /.labssh/run").await,
        "777"
    );
    let (_, err, status) = sh(
        &helper,
        RunAs::Ids {
            uid: STUDENT.0,
            gid: STUDENT.1,
        },
        "cat /proc/1/environ",
    )
    .await
    .unwrap();
    assert_ne!(status, ExitStatus::Code(0), "PID 1 is not dumpable");
    assert!(err.contains("denied"), "{err}");
    // Nor may they write into the binaries.
    let (_, _, status) = sh(
        &helper,
        RunAs::Ids {
            uid: STUDENT.0,
            gid: STUDENT.1,
        },
        "echo x > /.labssh/init",
    )
    .await
    .unwrap();
    assert_ne!(status, ExitStatus::Code(0));
}

#[tokio::test]
async fn baseline_the_helper_is_root_with_its_capabilities_and_takes_the_socket_directory() {
    let pod = Pod::new();
    // The install container of a baseline pod: the image's user (root), no capabilities.
    let install = ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"];
    let (code, err) = pod.install(&install, false);
    assert_eq!(code, 0, "install as root: {err}");
    let ids = format!("{}:{}", STUDENT.0, STUDENT.1);
    let id = pod.start(
        "baseline",
        &strs(&baseline()),
        &["--user", &ids, "--drop-caps", HELPER_CAP_NUMBERS],
    );
    let helper = helper_of(&id);

    assert_eq!(student_says(&helper, "id -u; id -g").await, "1000\n1000");
    let (out, err, status) = sh(
        &helper,
        RunAs::Root,
        "id -u; stat -c '%a %u %g' /.labssh/run",
    )
    .await
    .unwrap();
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "0\n700 0 0", "the emptyDir became root's alone");
    // The keepalive runs as the student, and nothing the helper starts gets its
    // capabilities back.
    let (out, err, status) = sh(
        &helper,
        RunAs::Root,
        "ps -o user,comm | awk '$2 == \"sleep\" { print $1 }'; grep CapBnd /proc/self/status",
    )
    .await
    .unwrap();
    assert_eq!(status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "1000\nCapBnd:\t0000000000000000");
}

#[tokio::test]
async fn install_reruns_overwrite_and_a_missing_sftp_server_is_an_error() {
    let pod = Pod::new();
    let security = restricted();
    // A pod whose image lacks labssh-sftp: a clear error, nothing installed.
    let (code, err) = pod.install(&strs(&security), true);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("labssh-sftp") && err.contains("No such file"),
        "{err}"
    );

    assert_eq!(pod.install(&strs(&security), false).0, 0);
    let ids = format!("{}:{}", STUDENT.0, STUDENT.1);
    let id = pod.start("rerun", &strs(&security), &["--user", &ids]);
    let helper = helper_of(&id);
    let first = student_says(&helper, "stat -c %i /.labssh/init /.labssh/sftp-server").await;

    // An older agent's copies (root's, as a baseline install would leave them; the
    // emptyDir is world-writable) replaced whole by the next run, as the student.
    docker_ok(&[
        "run",
        "--rm",
        "--label",
        &pod.label(),
        "-v",
        &format!("{}:/d", pod.bin()),
        IMAGE,
        "sh",
        "-c",
        "echo old > /d/sftp-server.new && mv /d/sftp-server.new /d/sftp-server",
    ]);
    assert_eq!(
        student_says(&helper, "cat /.labssh/sftp-server").await,
        "old"
    );
    let (code, err) = pod.install(&strs(&security), false);
    assert_eq!(code, 0, "re-run: {err}");
    let listing = student_says(&helper, "ls -a /.labssh | tr '\\n' ' '").await;
    assert_eq!(
        listing, ". .. init run sftp-server",
        "no temporary files left"
    );
    let second = student_says(&helper, "stat -c %i /.labssh/init /.labssh/sftp-server").await;
    assert_ne!(first, second, "new files, renamed into place");
    let (_, sftp) = binaries();
    let installed = student_says(&helper, "md5sum < /.labssh/sftp-server").await;
    let built = Command::new("md5sum")
        .stdin(std::fs::File::open(sftp).unwrap())
        .output()
        .unwrap();
    assert_eq!(installed, String::from_utf8_lossy(&built.stdout).trim());
    assert_eq!(
        student_says(&helper, "stat -c %a /.labssh/init /.labssh/sftp-server").await,
        "755\n755"
    );
    // The helper that was running keeps serving from the file it started with.
    assert_eq!(student_says(&helper, "id -u").await, "1000");
    // And the SFTP server installed is one that runs.
    assert_eq!(
        student_says(&helper, "/.labssh/sftp-server --version | cut -d' ' -f1").await,
        "labssh-sftp"
    );
}
