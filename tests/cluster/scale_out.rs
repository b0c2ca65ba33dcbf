//! Scale-out and faults with real processes: HAProxy (PROXY protocol v2) in
//! front of two proxy replicas, three agents, one controller, Redis — each a
//! separate process on loopback, driven with the stock `ssh` client.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use labssh_testkit::docker::{docker, ensure_test_image, Cleanup};
use labssh_testkit::process::{free_port, Proc};
use labssh_testkit::redis_server::RedisServer;
use labssh_testkit::ssh::{stderr, stdout, Auth, Ssh};

use crate::labssh;

const PW: &str = "class-of-2026";
const AGENTS: usize = 3;
const USERS: usize = 20;
const STARTUP: Duration = Duration::from_secs(30);
/// How long a killed agent's sessions wait for it (it does not come back here).
const REATTACH_GRACE: u64 = 3;

struct Fleet {
    dir: tempfile::TempDir,
    controller_port: u16,
    controller: Proc,
    agents: Vec<Proc>,
    proxies: Vec<Proc>,
    _haproxy: Proc,
    haproxy_port: u16,
    proxy_ports: Vec<u16>,
    prefixes: Vec<String>,
    redis: RedisServer,
}

impl Fleet {
    fn controller_config(&self) -> std::path::PathBuf {
        self.dir.path().join("controller.toml")
    }

    fn start_controller(dir: &Path, port: u16) -> Proc {
        let mut p = Proc::start(
            "controller",
            labssh("controller", &dir.join("controller.toml")),
            dir,
        )
        .unwrap();
        p.wait_port(port, STARTUP).unwrap();
        p
    }

    /// Which agent holds a user's container (by the container's label).
    fn agent_of(&self, user: &str) -> Option<String> {
        for prefix in &self.prefixes {
            let label = docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=labssh.prefix={prefix}"),
                "--filter",
                &format!("label=labssh.user={user}"),
                "--filter",
                "label=labssh.env=default",
                "--format",
                "{{.Label \"labssh.agent\"}}",
            ])
            .unwrap_or_default();
            if let Some(agent) = label.lines().next().filter(|l| !l.is_empty()) {
                return Some(agent.to_string());
            }
        }
        None
    }

    fn logins_on(&self, proxy: usize) -> usize {
        self.proxies[proxy]
            .log_text()
            .matches("authenticated")
            .count()
    }
}

async fn start_fleet() -> (Fleet, Vec<Cleanup>) {
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
    // Logs of every process stay in this directory for a failing run.
    eprintln!("fleet logs in {}", d.display());
    let redis = RedisServer::start().unwrap();
    let base = labssh_testkit::unique("so");
    let prefixes: Vec<String> = (0..AGENTS).map(|i| format!("{base}a{i}")).collect();
    let cleanups = prefixes
        .iter()
        .map(|p| Cleanup { prefix: p.clone() })
        .collect();

    let users = d.join("users.toml");
    for i in 1..=USERS {
        labssh_proxy::users::add_user(&users, &format!("user{i:02}"), Some(PW), None).unwrap();
    }
    for name in ["late1", "late2", "late3", "late4"] {
        labssh_proxy::users::add_user(&users, name, Some(PW), None).unwrap();
    }

    let controller_port = free_port();
    std::fs::write(
        d.join("controller.toml"),
        format!(
            // The strict bound, so the spread below is the bounded-load one.
            "listen = \"127.0.0.1:{controller_port}\"\nload_sigmas = 0\n{}",
            crate::lab::controller_toml()
        ),
    )
    .unwrap();
    let controller = Fleet::start_controller(d, controller_port);

    let mut agents = Vec::new();
    for (i, prefix) in prefixes.iter().enumerate() {
        let port = free_port();
        let cfg = d.join(format!("agent{i}.toml"));
        // These agents get SIGKILLed, which leaves no chance to remove
        // firewall rules; the isolation test covers the firewall.
        std::fs::write(
            &cfg,
            format!(
                "name = \"a{i}\"\nlisten = \"127.0.0.1:{port}\"\nadvertise = \"http://127.0.0.1:{port}\"\n\
                 controller = \"http://127.0.0.1:{controller_port}\"\ncapacity = 100\ncontainer_prefix = \"{prefix}\"\nfirewall = false\n\
                 reattach_grace = {REATTACH_GRACE}\n"
            ),
        )
        .unwrap();
        let mut p = Proc::start(&format!("agent{i}"), labssh("agent", &cfg), d).unwrap();
        p.wait_port(port, STARTUP).unwrap();
        agents.push(p);
    }

    let mut proxies = Vec::new();
    let mut proxy_ports = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let cfg = d.join(format!("proxy{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{port}\"\nhost_keys = [\"{dir}/host_ed25519_key\"]\n\
                 users_file = \"{dir}/users.toml\"\ncache_key_file = \"{dir}/cache.key\"\n\
                 controller = \"http://127.0.0.1:{controller_port}\"\nredis_url = \"{redis}\"\n\
                 auth_rejection_ms = 50\ncontroller_timeout_secs = 3\n\
                 [proxy_protocol]\ntrusted = [\"127.0.0.1/32\"]\nrequired = true\n",
                dir = d.display(),
                redis = redis.url(),
            ),
        )
        .unwrap();
        proxies.push(Proc::start(&format!("proxy{i}"), labssh("proxy", &cfg), d).unwrap());
        proxy_ports.push(port);
    }
    for (p, port) in proxies.iter_mut().zip(&proxy_ports) {
        p.wait_port(*port, STARTUP).unwrap();
    }

    let haproxy_port = free_port();
    let cfg = d.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n\
             frontend ssh\n  bind 127.0.0.1:{haproxy_port}\n  default_backend proxies\n\
             backend proxies\n  balance roundrobin\n  option tcp-check\n  tcp-check connect default\n  tcp-check expect rstring ^SSH-2\\.0-\n\
             \x20 default-server send-proxy-v2 check-send-proxy check inter 300ms fall 1 rise 2\n\
             \x20 server p0 127.0.0.1:{}\n  server p1 127.0.0.1:{}\n",
            proxy_ports[0], proxy_ports[1]
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut haproxy = Proc::start("haproxy", cmd, d).expect("haproxy (apt-get install haproxy)");
    haproxy.wait_port(haproxy_port, STARTUP).unwrap();

    let fleet = Fleet {
        dir,
        controller_port,
        controller,
        agents,
        proxies,
        _haproxy: haproxy,
        haproxy_port,
        proxy_ports,
        prefixes,
        redis,
    };
    // Let every agent register and HAProxy mark both replicas up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (fleet, cleanups)
}

fn pw() -> Auth {
    Auth::Password(PW.into())
}

/// `labssh sessions --json` from the fleet's controller: (user, proxy) of each.
fn listed(fleet: &Fleet) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(["sessions", "--json", "--controller"])
        .arg(format!("http://127.0.0.1:{}", fleet.controller_port))
        .output()
        .unwrap();
    if !out.status.success() {
        // The controller is restarting.
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (field("user"), field("proxy"))
        })
        .collect()
}

/// Waits until the listed sessions satisfy `done`; how long that took.
async fn listed_until(
    fleet: &Fleet,
    what: &str,
    done: impl Fn(&[(String, String)]) -> bool,
) -> (Duration, Vec<(String, String)>) {
    let started = Instant::now();
    loop {
        let sessions = listed(fleet);
        if done(&sessions) {
            return (started.elapsed(), sessions);
        }
        assert!(started.elapsed() < STARTUP, "{what}: {sessions:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session held open until its stdin closes: `echo up; read line`.
async fn held(ssh: &Ssh, user: &str) -> tokio::process::Child {
    use tokio::io::AsyncBufReadExt;
    let mut child = ssh
        .command(user, &pw(), &["echo up; read line"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let up = tokio::time::timeout(STARTUP, lines.next_line())
        .await
        .expect("the held session answers")
        .unwrap();
    assert_eq!(up.as_deref(), Some("up"), "{user}");
    child
}

/// How many sessions may be held open across the faults below.
const HELD: usize = 4;

/// Every one of the `held` users' sessions is listed, and they are on two replicas.
fn on_both_replicas(sessions: &[(String, String)], held: &[String]) -> bool {
    let listed: Vec<&(String, String)> = sessions
        .iter()
        .filter(|(user, _)| held.contains(user))
        .collect();
    let proxies: std::collections::HashSet<&str> =
        listed.iter().map(|(_, proxy)| proxy.as_str()).collect();
    listed.len() == held.len() && proxies.len() == 2
}

/// Logs in until it works or `within` runs out; returns how long it took.
async fn login_until_ok(ssh: &Ssh, user: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let out = ssh.run(user, &pw(), &["echo ok"]).await.unwrap();
        if stdout(&out) == "ok\n" {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{user} could not log in within {within:?}: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behind_haproxy_survive_faults() {
    let (mut fleet, _cleanup) = start_fleet().await;
    let ssh = Ssh::new(format!("127.0.0.1:{}", fleet.haproxy_port).parse().unwrap()).unwrap();

    // 1. Twenty users log in through HAProxy, five at a time.
    for chunk in (1..=USERS).collect::<Vec<_>>().chunks(5) {
        let runs = chunk.iter().map(|i| {
            let user = format!("user{i:02}");
            let ssh = &ssh;
            async move {
                let out = ssh.run(&user, &pw(), &["hostname"]).await.unwrap();
                assert_eq!(
                    stdout(&out),
                    format!("{user}-default\n"),
                    "{user}: {}",
                    stderr(&out)
                );
            }
        });
        futures::future::join_all(runs).await;
    }
    let (on0, on1) = (fleet.logins_on(0), fleet.logins_on(1));
    assert!(
        on0 > 0 && on1 > 0,
        "logins spread over both replicas: {on0} / {on1}"
    );
    assert_eq!(on0 + on1, USERS, "every login authenticated once");
    let mut per_agent = std::collections::HashMap::new();
    let mut placement = std::collections::HashMap::new();
    for i in 1..=USERS {
        let user = format!("user{i:02}");
        let agent = fleet
            .agent_of(&user)
            .unwrap_or_else(|| panic!("{user} has no container"));
        *per_agent.entry(agent.clone()).or_insert(0) += 1;
        placement.insert(user, agent);
    }
    // Consistent hashing with bounded loads, strict (`load_sigmas = 0`): every
    // agent used, none above ceil((1 + 0.25) * 20 / 3) = 9.
    assert_eq!(per_agent.len(), AGENTS, "{per_agent:?}");
    assert!(per_agent.values().all(|&n| n <= 9), "{per_agent:?}");
    // The client's real address reaches the proxies through PROXY protocol:
    // a client bound to 127.0.0.2 shows up as such, although every TCP
    // connection the proxies see comes from HAProxy on 127.0.0.1.
    for _ in 0..2 {
        let out = ssh
            .command_with("user01", &pw(), &["-b", "127.0.0.2"], &["true"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    for p in 0..2 {
        let log = fleet.proxies[p].log_text();
        assert!(log.contains("peer=127.0.0.2:"), "proxy{p}: {log}");
        // user01 was validated once in the first round; through the shared
        // Redis, each replica then finds the credential in the cache.
        assert!(
            log.lines()
                .any(|l| l.contains("user=user01") && l.contains("cache=\"hit\"")),
            "proxy{p} has a cache hit for user01: {log}"
        );
    }

    // One registry of sessions: sessions held through both replicas are listed by
    // the controller, which names the replica of each. HAProxy's round robin sends
    // two logins in a row to different replicas, unless a health check just failed:
    // then one more login is held. They are students whose containers are not on
    // a0, the agent killed below, so they last until a proxy is.
    let candidates: Vec<String> = (3..=USERS)
        .map(|i| format!("user{i:02}"))
        .filter(|user| placement.get(user).map(String::as_str) != Some("a0"))
        .take(HELD)
        .collect();
    let mut held_sessions = Vec::new();
    let (both, held_users) = loop {
        held_sessions.push(held(&ssh, &candidates[held_sessions.len()]).await);
        let open = candidates[..held_sessions.len()].to_vec();
        let (took, sessions) = listed_until(&fleet, "held sessions listed", |s| {
            s.iter().filter(|(user, _)| open.contains(user)).count() == open.len()
        })
        .await;
        if on_both_replicas(&sessions, &open) {
            eprintln!("sessions of both replicas listed {took:?} after the last opened");
            let users = open.clone();
            break (
                move |s: &[(String, String)]| on_both_replicas(s, &open),
                users,
            );
        }
        assert!(
            open.len() < candidates.len(),
            "every held session on one replica: {sessions:?}"
        );
    };

    // 2. The controller restarts with sessions open: none drops, new logins
    //    work within 5 s, placements stay sticky, and the proxies' reports
    //    rebuild the list of sessions within 5 s.
    let long = |user: String| {
        let ssh = &ssh;
        async move {
            ssh.run(&user, &pw(), &["sleep 4; echo survived"])
                .await
                .unwrap()
        }
    };
    let sessions = tokio::spawn({
        let ssh = Ssh::new(format!("127.0.0.1:{}", fleet.haproxy_port).parse().unwrap()).unwrap();
        async move {
            let a = ssh
                .run("user01", &pw(), &["sleep 4; echo survived"])
                .await
                .unwrap();
            let b = ssh
                .run("user02", &pw(), &["sleep 4; echo survived"])
                .await
                .unwrap();
            (a, b)
        }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    fleet.controller.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    fleet.controller = Fleet::start_controller(fleet.dir.path(), fleet.controller_port);
    let (relisted, _) = listed_until(&fleet, "sessions listed again", &both).await;
    eprintln!("the sessions were listed again {relisted:?} after the controller restart");
    assert!(
        relisted < Duration::from_secs(5),
        "the restarted controller's list took {relisted:?}"
    );
    let took = login_until_ok(&ssh, "late1", Duration::from_secs(5)).await;
    eprintln!("new login worked {took:?} after the controller restart");
    let (a, b) = sessions.await.unwrap();
    assert_eq!(stdout(&a), "survived\n", "{}", stderr(&a));
    assert_eq!(stdout(&b), "survived\n", "{}", stderr(&b));
    for i in 1..=USERS {
        let user = format!("user{i:02}");
        if i % 4 == 0 {
            let out = ssh.run(&user, &pw(), &["true"]).await.unwrap();
            assert_eq!(out.status.code(), Some(0), "{user}: {}", stderr(&out));
            assert_eq!(
                fleet.agent_of(&user).as_ref(),
                placement.get(&user),
                "{user} moved"
            );
        }
    }
    let _ = fleet.controller_config();

    // 3. An agent dies: only its sessions end; its users are re-placed.
    let victim = "a0";
    let on_victim = placement
        .iter()
        .find(|(_, a)| *a == victim)
        .map(|(u, _)| u.clone())
        .unwrap();
    let elsewhere = placement
        .iter()
        .find(|(_, a)| *a != victim)
        .map(|(u, _)| u.clone())
        .unwrap();
    // The victim's session is relaying (it printed) when its agent is killed.
    let mut victim = ssh.command(
        &on_victim,
        &pw(),
        &["echo started; sleep 30; echo survived"],
    );
    victim
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut victim = victim.spawn().unwrap();
    let mut victim_out = victim.stdout.take().unwrap();
    let mut started = [0u8; 8];
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::AsyncReadExt::read_exact(&mut victim_out, &mut started),
    )
    .await
    .expect("the victim's session printed within 60 s")
    .unwrap();
    assert_eq!(&started, b"started\n");
    let (victim_session, other_session) = tokio::join!(
        async {
            fleet.agents[0].kill();
            victim.stdout = Some(victim_out);
            tokio::time::timeout(Duration::from_secs(60), victim.wait_with_output())
                .await
                .expect("the victim's ssh ended within 60 s of its agent")
                .unwrap()
        },
        long(elsewhere.clone())
    );
    assert_ne!(
        stdout(&victim_session),
        "survived\n",
        "the dead agent's session cannot survive"
    );
    // One clear line and the gateway's status, nothing of HTTP/2 or TLS.
    let told = stderr(&victim_session);
    assert_eq!(victim_session.status.code(), Some(255), "{told}");
    // It waited for the node as long as its container's labssh-init kept the
    // session, then gave up.
    assert!(
        told.contains("labssh: reconnecting to your container"),
        "{told}"
    );
    assert!(
        told.contains(&format!("labssh: lost the connection to node 'a0', where your container runs, and it did not come back within {REATTACH_GRACE} s; this session has ended")),
        "{told}"
    );
    assert!(
        !told.contains("h2") && !told.contains("transport"),
        "{told}"
    );
    assert_eq!(
        stdout(&other_session),
        "survived\n",
        "{}",
        stderr(&other_session)
    );
    let out = ssh.run(&on_victim, &pw(), &["hostname"]).await.unwrap();
    assert_eq!(
        stdout(&out),
        format!("{on_victim}-default\n"),
        "re-placed: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("node 'a0', which is down"),
        "the student is told their old container is out of reach: {}",
        stderr(&out)
    );
    let new_home = fleet.agent_of(&on_victim);
    assert!(new_home.is_some());

    // Draining an agent (`labssh agent drain`): no new containers there,
    // while its existing users still land on it.
    let drain = |verb: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args(["agent", verb, "a1", "--controller"])
            .arg(format!("http://127.0.0.1:{}", fleet.controller_port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(drain("drain").contains("agent a1 is draining"));
    let out = ssh.run("late4", &pw(), &["true"]).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fleet.agent_of("late4").as_deref(),
        Some("a2"),
        "new user avoids the drained agent"
    );
    if let Some(user) = placement
        .iter()
        .find(|(_, a)| *a == "a1")
        .map(|(u, _)| u.clone())
    {
        let out = ssh.run(&user, &pw(), &["true"]).await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(fleet.agent_of(&user).as_deref(), Some("a1"));
    }
    assert!(drain("resume").contains("takes new placements again"));
    let out = Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(["agent", "drain", "nosuch", "--controller"])
        .arg(format!("http://127.0.0.1:{}", fleet.controller_port))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown agent 'nosuch'"));

    // 4. A proxy dies mid-session: sessions on the other replica continue;
    //    once HAProxy's check drops the dead one, every new login works.
    let runs: Vec<_> = (0..4)
        .map(|i| {
            let ssh =
                Ssh::new(format!("127.0.0.1:{}", fleet.haproxy_port).parse().unwrap()).unwrap();
            let user = format!("user{:02}", 5 + i * 2);
            tokio::spawn(async move {
                ssh.run(&user, &pw(), &["sleep 3; echo survived"])
                    .await
                    .unwrap()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, before) = listed_until(&fleet, "held sessions before the kill", &both).await;
    fleet.proxies[0].kill();
    let mut survived = 0;
    for run in runs {
        let out = run.await.unwrap();
        if stdout(&out) == "survived\n" {
            survived += 1;
        } else {
            assert_eq!(
                out.status.code(),
                Some(255),
                "a dropped session is an ssh error"
            );
        }
    }
    assert!(
        (1..4).contains(&survived),
        "only the killed replica's sessions drop: {survived}/4"
    );
    // The killed replica's sessions leave the list; the other's stay.
    let killed = format!(":{}", fleet.proxy_ports[0]);
    let (gone, after) = listed_until(&fleet, "the dead replica's sessions gone", |s| {
        !s.is_empty() && s.iter().all(|(_, proxy)| !proxy.ends_with(&killed))
    })
    .await;
    eprintln!("the killed replica's sessions left the list within {gone:?} of the check");
    let survivor = before
        .iter()
        .find(|(user, proxy)| held_users.contains(user) && !proxy.ends_with(&killed))
        .expect("a held session on the surviving replica");
    assert!(after.contains(survivor), "{after:?} lacks {survivor:?}");
    drop(held_sessions);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 1..=10 {
        let user = format!("user{:02}", 10 + i);
        let out = ssh.run(&user, &pw(), &["echo ok"]).await.unwrap();
        assert_eq!(
            stdout(&out),
            "ok\n",
            "login {i} after the proxy died: {}",
            stderr(&out)
        );
    }

    // 5. Redis stops: logins go on. It comes back: the cache is used again.
    let redis_port = fleet.redis.port;
    fleet.redis.stop();
    let out = ssh.run("late2", &pw(), &["echo ok"]).await.unwrap();
    assert_eq!(stdout(&out), "ok\n", "with Redis down: {}", stderr(&out));
    fleet.redis = RedisServer::start_on(redis_port).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ssh.run("late3", &pw(), &["echo ok"]).await.unwrap();
        assert_eq!(stdout(&out), "ok\n", "{}", stderr(&out));
        let cached = fleet
            .redis
            .cli(&["--scan", "--pattern", "labssh:auth:*"])
            .unwrap();
        if !cached.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not used again after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(fleet.proxies[1].running() && fleet.controller.running());
}
