//! Sessions survive their agent: the agent is killed (SIGKILL, as a crash or an
//! upgrade gone wrong) and started again while students are logged in, and their
//! SSH sessions go on where they were, with the stock `ssh` client: labssh-init in
//! each container kept the processes, the proxy kept the channels.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labssh_testkit::docker::{docker, ensure_test_image, Cleanup};
use labssh_testkit::process::{free_port, Proc};
use labssh_testkit::redis_server::RedisServer;
use labssh_testkit::ssh::{stderr, stdout, Auth, Ssh};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::labssh;

const PW: &str = "keep-it-running";
const STARTUP: Duration = Duration::from_secs(30);
/// Short, so the test of its end is: still several restarts long.
const GRACE_SECS: u64 = 8;
/// Students with many sessions each, for the fifty.
const MANY_USERS: usize = 5;
const MANY: usize = 50;

/// A controller, one agent (the one restarted), one proxy and Redis, each its own
/// process on loopback.
struct Fleet {
    dir: tempfile::TempDir,
    _controller: Proc,
    agent: Option<Proc>,
    agent_port: u16,
    agent_config: PathBuf,
    proxy: Proc,
    prefix: String,
    _redis: RedisServer,
    ssh: Ssh,
}

impl Fleet {
    async fn start() -> (Fleet, Cleanup) {
        labssh_testkit::init_tracing();
        tokio::task::spawn_blocking(ensure_test_image)
            .await
            .unwrap()
            .unwrap();
        let mut dir = tempfile::tempdir().unwrap();
        if std::env::var_os("LABSSH_KEEP_LOGS").is_some() {
            dir.disable_cleanup(true);
        }
        let d = dir.path();
        eprintln!("fleet logs in {}", d.display());
        let redis = RedisServer::start().unwrap();
        let prefix = labssh_testkit::unique("ra");
        let cleanup = Cleanup {
            prefix: prefix.clone(),
        };
        let users = d.join("users.toml");
        for name in ["counter", "status", "expiry"]
            .into_iter()
            .map(String::from)
            .chain((0..MANY_USERS).map(|i| format!("many{i}")))
        {
            labssh_proxy::users::add_user(&users, &name, Some(PW), None).unwrap();
        }
        let controller_port = free_port();
        std::fs::write(
            d.join("controller.toml"),
            format!(
                "listen = \"127.0.0.1:{controller_port}\"\n{}",
                crate::lab::controller_toml()
            ),
        )
        .unwrap();
        let mut controller = Proc::start(
            "controller",
            labssh("controller", &d.join("controller.toml")),
            d,
        )
        .unwrap();
        controller.wait_port(controller_port, STARTUP).unwrap();

        let agent_port = free_port();
        let agent_config = d.join("agent.toml");
        // SIGKILLed agents leave no chance to remove firewall rules; the isolation
        // test covers the firewall.
        std::fs::write(
            &agent_config,
            format!(
                "name = \"a0\"\nlisten = \"127.0.0.1:{agent_port}\"\nadvertise = \"http://127.0.0.1:{agent_port}\"\n\
                 controller = \"http://127.0.0.1:{controller_port}\"\ncapacity = 100\ncontainer_prefix = \"{prefix}\"\n\
                 firewall = false\nreattach_grace = {GRACE_SECS}\nmax_sessions_per_user = 20\n"
            ),
        )
        .unwrap();
        let proxy_port = free_port();
        let proxy_config = d.join("proxy.toml");
        std::fs::write(
            &proxy_config,
            format!(
                "listen = \"127.0.0.1:{proxy_port}\"\nhost_keys = [\"{dir}/host_ed25519_key\"]\n\
                 users_file = \"{dir}/users.toml\"\ncache_key_file = \"{dir}/cache.key\"\n\
                 controller = \"http://127.0.0.1:{controller_port}\"\nredis_url = \"{redis}\"\n",
                dir = d.display(),
                redis = redis.url(),
            ),
        )
        .unwrap();
        let mut proxy = Proc::start("proxy", labssh("proxy", &proxy_config), d).unwrap();
        proxy.wait_port(proxy_port, STARTUP).unwrap();
        let ssh = Ssh::new(format!("127.0.0.1:{proxy_port}").parse().unwrap()).unwrap();
        let mut fleet = Fleet {
            dir,
            _controller: controller,
            agent: None,
            agent_port,
            agent_config,
            proxy,
            prefix,
            _redis: redis,
            ssh,
        };
        fleet.start_agent(0);
        // Registered with the controller before the first login.
        let out = login_until_ok(&fleet.ssh, "counter").await;
        assert_eq!(stdout(&out), "ok\n");
        (fleet, cleanup)
    }

    /// Starts the agent (again), logging to `agent-N.log`; returns once it listens.
    fn start_agent(&mut self, n: usize) {
        let mut agent = Proc::start(
            &format!("agent-{n}"),
            labssh("agent", &self.agent_config),
            self.dir.path(),
        )
        .unwrap();
        agent.wait_port(self.agent_port, STARTUP).unwrap();
        self.agent = Some(agent);
    }

    /// Kills the agent as a crash would.
    fn kill_agent(&mut self) {
        self.agent.take().expect("the agent runs").kill();
    }

    /// Stops the agent as systemd or the kubelet would (SIGTERM), and waits for it to
    /// exit.
    async fn stop_agent(&mut self) {
        let mut agent = self.agent.take().expect("the agent runs");
        agent.terminate();
        let deadline = Instant::now() + STARTUP;
        while agent.running() {
            assert!(Instant::now() < deadline, "the agent stops on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = agent.log_text();
        assert!(log.contains("agent stopped"), "{log}");
    }

    /// The id of `user`'s container (by its labels).
    fn container_of(&self, user: &str) -> String {
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
            "--filter",
            &format!("label=labssh.user={user}"),
        ])
        .unwrap();
        let id = ids.lines().next().unwrap_or_default().trim().to_owned();
        assert!(!id.is_empty(), "{user} has a container");
        id
    }
}

fn pw() -> Auth {
    Auth::Password(PW.into())
}

/// A first login, tried until the agent has registered.
async fn login_until_ok(ssh: &Ssh, user: &str) -> std::process::Output {
    let deadline = Instant::now() + STARTUP;
    loop {
        let out = ssh.run(user, &pw(), &["echo ok"]).await.unwrap();
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lines of a child's stdout, collected as they come.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(&self, out: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let lines = self.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let line = line.trim_end_matches('\r').to_owned();
                lines.0.lock().unwrap().push(line);
            }
        });
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The first line `f` accepts, waiting up to `within`.
    async fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.all().into_iter().find(|l| f(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}: {:?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The counter's numbers, in the order printed.
    fn counts(&self) -> Vec<u64> {
        self.all()
            .iter()
            .filter_map(|l| l.strip_prefix("n ")?.trim().parse().ok())
            .collect()
    }
}

/// A terminal session printing a counter every 100 ms and echoing what is typed with
/// its shell's pid; `quit` ends it with status 3.
const COUNTER: &str = "echo \"pid $$\"; \
     (i=0; while :; do i=$((i+1)); echo \"n $i\"; sleep 0.1; done) & c=$!; \
     while read l; do [ \"$l\" = quit ] && { kill $c; exit 3; }; echo \"got $l $$\"; done";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_survive_an_agent_restart() {
    let (mut fleet, _cleanup) = Fleet::start().await;
    let mut restarts = 0;

    // 1. A terminal printing a counter: the agent is killed and back within 5 s; the
    //    counter goes on in the same ssh session with no number lost or repeated,
    //    the same shell, and typing still reaches it; its exit status comes through.
    let mut cmd = fleet
        .ssh
        .command_with("counter", &pw(), &["-tt"], &[COUNTER]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut counter = cmd.spawn().unwrap();
    let mut typed = counter.stdin.take().unwrap();
    let lines = Lines::default();
    lines.follow(counter.stdout.take().unwrap());
    let told = Lines::default();
    told.follow(counter.stderr.take().unwrap());
    let pid = lines
        .wait_for("pid", STARTUP, |l| l.starts_with("pid "))
        .await;
    let pid = pid.strip_prefix("pid ").unwrap().to_owned();
    lines.wait_for("counter", STARTUP, |l| l == "n 10").await;
    fleet.kill_agent();
    let killed_at = *lines.counts().last().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    restarts += 1;
    fleet.start_agent(restarts);
    let goal = format!("n {}", killed_at + 30);
    lines
        .wait_for("the counter after the restart", STARTUP, |l| l == goal)
        .await;
    typed.write_all(b"hello\n").await.unwrap();
    let echoed = lines
        .wait_for("typed input", STARTUP, |l| l.starts_with("got hello"))
        .await;
    assert_eq!(echoed, format!("got hello {pid}"), "the same shell");
    typed.write_all(b"quit\n").await.unwrap();
    let status = tokio::time::timeout(STARTUP, counter.wait())
        .await
        .expect("the session ends")
        .unwrap();
    assert_eq!(status.code(), Some(3), "{:?}", told.all());
    let counts = lines.counts();
    let expected: Vec<u64> = (1..=*counts.last().unwrap()).collect();
    assert_eq!(counts, expected, "every number once, in order");
    assert!(
        told.all()
            .iter()
            .any(|l| l.contains("labssh: reconnecting to your container")),
        "the student is told once: {:?}",
        told.all()
    );
    let told_lines = told.all();
    assert_eq!(
        told_lines
            .iter()
            .filter(|l| l.contains("reconnecting"))
            .count(),
        1,
        "{told_lines:?}"
    );

    // 2. A command without a terminal (its pipes read by the agent itself) across a
    //    restart as an upgrade does it (SIGTERM, then the new agent): its exit
    //    status comes through, its output once.
    let mut cmd = fleet
        .ssh
        .command("status", &pw(), &["echo go; sleep 3; echo late; exit 7"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut status = cmd.spawn().unwrap();
    let lines = Lines::default();
    lines.follow(status.stdout.take().unwrap());
    lines.wait_for("go", STARTUP, |l| l == "go").await;
    fleet.stop_agent().await;
    restarts += 1;
    fleet.start_agent(restarts);
    let exit = tokio::time::timeout(STARTUP, status.wait())
        .await
        .expect("the command ends")
        .unwrap();
    assert_eq!(exit.code(), Some(7));
    // The reader may still be taking the last line.
    lines.wait_for("late", STARTUP, |l| l == "late").await;
    assert_eq!(lines.all(), vec!["go", "late"]);

    // 3. Fifty open sessions re-attach after one restart.
    let started = Instant::now();
    let mut many = Vec::new();
    let ready = Lines::default();
    for i in 0..MANY {
        let user = format!("many{}", i % MANY_USERS);
        let mut cmd = fleet.ssh.command(
            &user,
            &pw(),
            &[&format!("echo ready {i}; sleep 20; echo done {i}")],
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        ready.follow(child.stdout.take().unwrap());
        many.push(child);
        // Not all at once: a 2-core CI machine also runs the containers.
        if i % 10 == 9 {
            let n = i + 1;
            let within = STARTUP * 2;
            let deadline = Instant::now() + within;
            while ready
                .all()
                .iter()
                .filter(|l| l.starts_with("ready"))
                .count()
                < n
            {
                assert!(
                    Instant::now() < deadline,
                    "{n} sessions ready: {:?}",
                    ready.all()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("{MANY} sessions open in {:?}", started.elapsed());
    let resumed_before = fleet.proxy.log_text().matches("session resumed").count();
    fleet.kill_agent();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarts += 1;
    fleet.start_agent(restarts);
    let listening = down.elapsed();
    let deadline = Instant::now() + STARTUP;
    let waits = loop {
        let log = fleet.proxy.log_text();
        let waits = waited_ms(&log);
        if waits.len() >= resumed_before + MANY || Instant::now() > deadline {
            break waits[resumed_before..].to_vec();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(waits.len(), MANY, "every session resumed");
    for (i, child) in many.into_iter().enumerate() {
        let out = tokio::time::timeout(STARTUP, child.wait_with_output())
            .await
            .expect("each session ends")
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{i}: {}", stderr(&out));
    }
    let done = ready.all().iter().filter(|l| l.starts_with("done")).count();
    assert_eq!(done, MANY, "{:?}", ready.all());
    let mut sorted = waits.clone();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    // Printed for the note: the agent was down `listening`; the waits run
    // from each stream's break.
    eprintln!(
        "re-attach of {MANY} sessions: agent listening again {} ms after the kill; resumed p50 {} ms, p99 {} ms after the break",
        listening.as_millis(),
        at(0.5),
        at(0.99)
    );

    // 4. An `ssh -R` listener is there again after a restart, on the same port.
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_port = local.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = local.accept().await {
            let _ = conn.write_all(b"hello from the client side\n").await;
        }
    });
    let spec = format!("9000:127.0.0.1:{local_port}");
    let mut forward = fleet
        .ssh
        .command_with(
            "counter",
            &pw(),
            &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec],
            &[],
        )
        .spawn()
        .unwrap();
    remote_forward_answers(&fleet).await;
    fleet.kill_agent();
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarts += 1;
    fleet.start_agent(restarts);
    remote_forward_answers(&fleet).await;
    assert!(
        forward.try_wait().unwrap().is_none(),
        "the client's ssh -R connection stayed up"
    );
    let _ = forward.kill().await;

    // 5. The agent stays down longer than the grace: one clear line and status
    //    255, and labssh-init hangs the process up.
    let mut cmd = fleet
        .ssh
        .command_with("expiry", &pw(), &["-tt"], &["echo up; exec sleep 600"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut expiry = cmd.spawn().unwrap();
    let lines = Lines::default();
    lines.follow(expiry.stdout.take().unwrap());
    let told = Lines::default();
    told.follow(expiry.stderr.take().unwrap());
    lines.wait_for("up", STARTUP, |l| l == "up").await;
    let container = fleet.container_of("expiry");
    assert!(sleeping(&container), "the session's process runs");
    fleet.kill_agent();
    let status = tokio::time::timeout(Duration::from_secs(GRACE_SECS) + STARTUP, expiry.wait())
        .await
        .expect("the session ends after the grace")
        .unwrap();
    assert_eq!(status.code(), Some(255), "{:?}", told.all());
    told.wait_for(
        "the line",
        STARTUP,
        |l| l.contains(&format!("labssh: lost the connection to node 'a0', where your container runs, and it did not come back within {GRACE_SECS} s; this session has ended")),
    )
    .await;
    let deadline = Instant::now() + STARTUP;
    while sleeping(&container) {
        assert!(
            Instant::now() < deadline,
            "labssh-init hung the kept process up after its grace"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    restarts += 1;
    fleet.start_agent(restarts);
    // New logins work again once it has registered.
    let out = login_until_ok(&fleet.ssh, "expiry").await;
    assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));

    // 6. The container is gone when the agent is back: one clear line, 255.
    let mut cmd = fleet
        .ssh
        .command("expiry", &pw(), &["echo up; exec sleep 600"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut gone = cmd.spawn().unwrap();
    let lines = Lines::default();
    lines.follow(gone.stdout.take().unwrap());
    let told = Lines::default();
    told.follow(gone.stderr.take().unwrap());
    lines.wait_for("up", STARTUP, |l| l == "up").await;
    let container = fleet.container_of("expiry");
    fleet.kill_agent();
    docker(&["rm", "-f", &container]).unwrap();
    restarts += 1;
    fleet.start_agent(restarts);
    let status = tokio::time::timeout(STARTUP, gone.wait())
        .await
        .expect("the session ends")
        .unwrap();
    assert_eq!(status.code(), Some(255), "{:?}", told.all());
    told.wait_for("the line", STARTUP, |l| {
        l.contains("labssh: your container stopped while its node was away; this session has ended")
    })
    .await;
}

/// Waits until the container's port 9000 (an `ssh -R` to the test) answers.
async fn remote_forward_answers(fleet: &Fleet) {
    let deadline = Instant::now() + STARTUP;
    loop {
        let cmd = fleet
            .ssh
            .command("counter", &pw(), &["nc 127.0.0.1 9000 </dev/null"]);
        let out = labssh_testkit::ssh::output(cmd).await.unwrap();
        if stdout(&out) == "hello from the client side\n" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the -R listener answers: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `sleep 600` runs in the container.
fn sleeping(container: &str) -> bool {
    docker(&["top", container])
        .map(|top| top.contains("sleep 600"))
        .unwrap_or(false)
}

/// The `waited_ms` of every "session resumed" line of the proxy's log.
fn waited_ms(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("session resumed"))
        .filter_map(|l| {
            let rest = &l[l.find("waited_ms=")? + "waited_ms=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}
