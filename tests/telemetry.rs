//! Telemetry end to end: the traces of a real `ssh` login received by a real
//! OTLP/gRPC server, `/metrics` counting every login, a real Prometheus
//! scraping it, and the Grafana dashboards checked against it.
//!
//! Metrics and the tracing subscriber are process-wide, so the tests of this
//! file run one at a time (`SERIAL`) and compare figures before and after.

mod lab;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lab::{Lab, LabOptions};
use labssh_testkit::ssh::{stderr, stdout};
use labssh_testkit::telemetry::dashboards;
use labssh_testkit::telemetry::otlp::{OtlpReceiver, ReceivedSpan};
use labssh_testkit::telemetry::prometheus::{scrape, Exposition, Prometheus};
use tokio::net::TcpListener;

/// Spans and metrics are exported within this after a flush.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);

/// The OTLP receiver and the runtime it and the exporters live on: it must
/// outlive every test's own runtime.
struct Telemetry {
    _runtime: tokio::runtime::Runtime,
    receiver: OtlpReceiver,
}

/// Starts telemetry once per process, exporting to the in-test receiver.
/// Every test calls this first, so metrics are never recorded before.
fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        // A thread of its own: tests call this from inside their runtime,
        // where blocking on another one is not allowed.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("telemetry runtime");
            let receiver = runtime.block_on(async {
                let receiver = OtlpReceiver::start().await.expect("OTLP receiver");
                let mut options = labssh_telemetry::Options::new("labssh-test");
                options.otlp_endpoint = Some(receiver.endpoint());
                options.test_writer = true;
                // Kept for the whole process: exporting stops at shutdown.
                std::mem::forget(labssh_telemetry::init(options).expect("telemetry init"));
                receiver
            });
            Telemetry {
                _runtime: runtime,
                receiver,
            }
        })
        .join()
        .expect("telemetry set-up")
    })
}

/// One test at a time: the figures are process-wide.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn login(lab: &Lab, user: &str, auth: &labssh_testkit::ssh::Auth) {
    let out = lab.ssh.run(user, auth, &["echo hi"]).await.unwrap();
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "hi\n"),
        "stderr={}",
        stderr(&out)
    );
}

/// The spans of the trace whose `ssh` root span satisfies `root`, once its
/// agent spans and `close` have arrived.
async fn trace_of(
    receiver: &OtlpReceiver,
    not: &[String],
    mut root: impl FnMut(&ReceivedSpan) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    loop {
        labssh_telemetry::flush().await;
        let spans = receiver.spans();
        let found = spans
            .iter()
            .filter(|s| s.name == "ssh" && !not.contains(&s.trace_id) && root(s))
            .map(|s| s.trace_id.clone())
            .find(|trace| {
                let names: Vec<&str> = spans
                    .iter()
                    .filter(|s| &s.trace_id == trace)
                    .map(|s| s.name.as_str())
                    .collect();
                ["close", "agent.session", "spawn"]
                    .iter()
                    .all(|n| names.contains(n))
            });
        if let Some(trace) = found {
            return spans.into_iter().filter(|s| s.trace_id == trace).collect();
        }
        assert!(
            Instant::now() < deadline,
            "no complete login trace within {EXPORT_TIMEOUT:?}; spans: {:?}",
            spans
                .iter()
                .map(|s| (&s.name, &s.trace_id[..8]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one '{name}' span, got {}: {:#?}",
        found.len(),
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn assert_child(spans: &[ReceivedSpan], child: &str, parent: &str) {
    let (c, p) = (one(spans, child), one(spans, parent));
    assert_eq!(
        c.parent_span_id, p.span_id,
        "'{child}' should be a child of '{parent}'"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_login_is_one_trace_from_proxy_through_controller_to_agent() {
    let telemetry = telemetry();
    let _serial = SERIAL.lock().await;
    let lab = Lab::start(LabOptions::default()).await;
    let receiver = &telemetry.receiver;

    login(&lab, "alice", &Lab::alice()).await;
    let first = trace_of(receiver, &[], |s| s.attr("user") == Some("alice")).await;

    // The root: one SSH connection.
    let root = one(&first, "ssh");
    assert_eq!(root.parent_span_id, "", "ssh is the root span");
    assert_eq!(root.attr("environment"), Some(""));
    assert_eq!(root.attr("method"), Some("password"));
    // Phases of the connection.
    assert_child(&first, "accept", "ssh");
    assert_child(&first, "auth", "ssh");
    assert_child(&first, "session", "ssh");
    let auth = one(&first, "auth");
    assert_eq!(auth.attr("method"), Some("password"));
    assert_eq!(auth.attr("result"), Some("accepted"));
    assert_eq!(
        auth.attr("cache"),
        Some("miss"),
        "first login verifies the password"
    );
    let verify: f64 = auth.attr("authenticator_seconds").unwrap().parse().unwrap();
    assert!(verify > 0.0, "authenticator latency recorded: {auth:?}");
    // Phases of the session channel.
    for phase in ["place", "start", "first_byte", "close"] {
        assert_child(&first, phase, "session");
    }
    // Across gRPC: the controller's placement and the agent's session join
    // the proxy's trace as children of the calls that caused them.
    assert_child(&first, "controller.place", "place");
    assert_child(&first, "agent.session", "start");
    assert_child(&first, "ensure", "agent.session");
    assert_child(&first, "spawn", "agent.session");
    assert_eq!(one(&first, "controller.place").attr("outcome"), Some("new"));
    assert_eq!(one(&first, "ensure").attr("outcome"), Some("created"));
    let path = one(&first, "spawn").attr("path");
    assert!(
        matches!(path, Some("helper" | "exec")),
        "spawn path: {path:?}"
    );
    let close = one(&first, "close");
    assert_eq!(close.attr("exit_status"), Some("0"));
    assert_eq!(close.attr("ending"), Some("exited"));
    assert_eq!(close.attr("bytes_to_client"), Some("3"), "\"hi\\n\"");
    assert_eq!(close.attr("bytes_to_container"), Some("0"));
    // Phases happen in order.
    let start_of = |n: &str| one(&first, n).start_ns;
    assert!(start_of("accept") <= start_of("auth"));
    assert!(start_of("auth") <= start_of("place"));
    assert!(start_of("place") <= start_of("start"));
    assert!(start_of("start") <= start_of("first_byte"));
    assert!(one(&first, "ssh").end_ns >= one(&first, "close").end_ns);

    // The second login is a new trace, with the credential cache hit and
    // the container found.
    login(&lab, "alice", &Lab::alice()).await;
    let second = trace_of(receiver, &[first[0].trace_id.clone()], |s| {
        s.attr("user") == Some("alice")
    })
    .await;
    assert_ne!(second[0].trace_id, first[0].trace_id);
    assert_eq!(one(&second, "auth").attr("cache"), Some("hit"));
    assert_eq!(one(&second, "auth").attr("authenticator_seconds"), None);
    assert_eq!(one(&second, "ensure").attr("outcome"), Some("found"));
    assert_child(&second, "agent.session", "start");

    // Metrics went out over OTLP as well.
    labssh_telemetry::flush().await;
    let names = receiver.metric_names();
    for name in [
        "labssh_session_setup_seconds",
        "labssh_login_seconds",
        "labssh_auth_attempts_total",
        "labssh_container_ensure_seconds",
    ] {
        assert!(
            names.contains(name),
            "{name} not exported over OTLP: {names:?}"
        );
    }
    lab.stop().await;
}

/// Serves `/metrics` for this process, like `labssh up --http`.
async fn metrics_listener() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = labssh_telemetry::Health::new();
    health.set_ready(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(labssh_telemetry::http::serve(listener, health, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// after − before for the samples named `name` with `labels`.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_every_login_and_a_real_prometheus_scrapes_them() {
    telemetry();
    let _serial = SERIAL.lock().await;
    let lab = Lab::start(LabOptions::default()).await;
    let (addr, _stop_http) = metrics_listener().await;
    let before = scrape(addr).await.unwrap();

    const N: f64 = 3.0;
    login(&lab, "alice", &Lab::alice()).await;
    login(&lab, "alice", &Lab::alice()).await;
    login(&lab, "bob", &Lab::bob()).await;

    // Connections are counted closed once their tasks end, just after ssh exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(addr).await.unwrap();
        let open = after.sum("labssh_proxy_connections_active", &[])
            - before.sum("labssh_proxy_connections_active", &[]);
        let sessions = after.sum("labssh_proxy_sessions_active", &[])
            - before.sum("labssh_proxy_sessions_active", &[]);
        if (open == 0.0 && sessions == 0.0) || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);

    assert_eq!(d("labssh_proxy_connections_total", &[]), N);
    assert_eq!(d("labssh_proxy_connections_active", &[]), 0.0);
    assert_eq!(d("labssh_proxy_sessions_active", &[]), 0.0);
    assert_eq!(d("labssh_proxy_unauthenticated_connections", &[]), 0.0);
    assert_eq!(d("labssh_proxy_refused_total", &[]), 0.0);
    assert_eq!(
        d(
            "labssh_auth_attempts_total",
            &[("method", "password"), ("result", "accepted")]
        ),
        N
    );
    assert_eq!(
        d("labssh_auth_attempts_total", &[("result", "rejected")]),
        0.0
    );
    assert_eq!(
        d("labssh_auth_cache_lookups_total", &[("result", "miss")]),
        2.0
    );
    assert_eq!(
        d("labssh_auth_cache_lookups_total", &[("result", "hit")]),
        1.0
    );
    for phase in ["accept", "auth", "place", "start", "first_byte"] {
        assert_eq!(
            d("labssh_session_setup_seconds_count", &[("phase", phase)]),
            N,
            "phase {phase}"
        );
        assert_eq!(
            d(
                "labssh_session_setup_seconds_bucket",
                &[("phase", phase), ("le", "+Inf")]
            ),
            N,
            "phase {phase}"
        );
    }
    assert_eq!(d("labssh_login_seconds_count", &[]), N);
    assert_eq!(
        d("labssh_forwarded_connections_total", &[("kind", "session")]),
        N
    );
    assert_eq!(
        d(
            "labssh_forwarded_bytes_total",
            &[("direction", "to_client")]
        ),
        3.0 * N,
        "\"hi\\n\" per login"
    );
    assert_eq!(
        d(
            "labssh_container_ensure_seconds_count",
            &[("agent", "agent0")]
        ),
        N
    );
    assert_eq!(
        d(
            "labssh_container_ensure_seconds_count",
            &[("outcome", "created")]
        ),
        2.0
    );
    assert_eq!(
        d(
            "labssh_container_ensure_seconds_count",
            &[("outcome", "found")]
        ),
        1.0
    );
    assert_eq!(d("labssh_spawn_seconds_count", &[("agent", "agent0")]), N);
    assert_eq!(
        d("labssh_spawn_seconds_count", &[("path", "helper")])
            + d("labssh_spawn_seconds_count", &[("path", "exec")]),
        N
    );
    // The proxy caches placements for a few seconds: alice's second login
    // may not reach the controller.
    let placed = d("labssh_placements_total", &[]);
    assert!((2.0..=N).contains(&placed), "placements: {placed}");
    assert_eq!(d("labssh_errors_total", &[]), 0.0);
    assert_eq!(
        after.sum("labssh_controller_agents", &[("state", "live")]),
        1.0
    );
    assert!(after.sum("labssh_agent_capacity", &[("agent", "agent0")]) > 0.0);
    // No student identity in any label.
    for s in &after.samples {
        for v in s.labels.values() {
            assert!(
                v != "alice" && v != "bob",
                "identity in a metric label: {s:?}"
            );
        }
    }

    // Every metric a dashboard queries exists in this /metrics.
    let problems =
        dashboards::check_dir(&repo("deploy/grafana/dashboards"), &after.names()).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    // A real Prometheus scrapes it, and the setup-time series come back
    // through its query API.
    assert!(
        Prometheus::available(),
        "the `prometheus` binary is missing: run scripts/setup-host.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), &[("labssh", addr)])
        .await
        .unwrap();
    let series = prometheus
        .wait_series(
            "sum by (phase) (labssh_session_setup_seconds_count{job=\"labssh\"})",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    let by_phase: BTreeMap<String, f64> = series
        .iter()
        .map(|s| {
            (
                s["metric"]["phase"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    for phase in ["accept", "auth", "place", "start", "first_byte"] {
        assert!(
            by_phase.get(phase).is_some_and(|n| *n >= N),
            "phase {phase} in {by_phase:?}"
        );
    }
    let p99 = prometheus
        .query("histogram_quantile(0.99, sum by (le) (labssh_login_seconds_bucket))")
        .await
        .unwrap();
    assert_eq!(p99.len(), 1, "{p99:?}");
    lab.stop().await;
}

/// A connection that never sends a byte counts in
/// `labssh_proxy_unauthenticated_connections` until the login grace closes it,
/// which counts in `labssh_proxy_refused_total{reason="login_grace"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_connection_is_unauthenticated_until_the_grace_closes_it() {
    use tokio::io::AsyncReadExt;

    telemetry();
    let _serial = SERIAL.lock().await;
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| c.login_grace_secs = 3),
        ..Default::default()
    })
    .await;
    let now = || Exposition::parse(&labssh_telemetry::metrics::render()).unwrap();
    let gauge = "labssh_proxy_unauthenticated_connections";
    let grace = [("reason", "login_grace")];
    let before = now();

    let mut idle = tokio::net::TcpStream::connect(lab.cluster.as_ref().unwrap().ssh_addr)
        .await
        .unwrap();
    // Admitted: the banner comes, and it counts.
    let mut banner = [0u8; 8];
    idle.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    assert_eq!(delta(&before, &now(), gauge, &[]), 1.0);

    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), idle.read_to_end(&mut rest))
        .await
        .expect("closed by the login grace")
        .ok();
    // It stopped counting, and was counted refused, before it was closed.
    let after = now();
    assert_eq!(delta(&before, &after, gauge, &[]), 0.0);
    assert_eq!(
        delta(&before, &after, "labssh_proxy_refused_total", &grace),
        1.0
    );
    lab.stop().await;
}

#[tokio::test]
async fn dashboards_parse_and_query_only_exported_metrics() {
    telemetry();
    // A fresh /metrics names every family, samples or not.
    let exposed = Exposition::parse(&labssh_telemetry::metrics::render())
        .unwrap()
        .names();
    let dir = repo("deploy/grafana/dashboards");
    let problems = dashboards::check_dir(&dir, &exposed).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let files = dashboards::dashboard_files(&dir).unwrap();
    assert_eq!(files.len(), 3, "class start, agents, proxies: {files:?}");

    // The check bites: a panel querying a metric that does not exist fails.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let mut dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    dashboard["panels"][1]["targets"][0]["expr"] =
        "rate(labssh_logins_that_never_were_total[5m])".into();
    let problems = dashboards::check(&dashboard, &exposed);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("labssh_logins_that_never_were_total")),
        "{problems:?}"
    );

    // The shipped scrape configuration is valid for Prometheus itself.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(repo("deploy/prometheus.yml"))
        .output()
    {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labssh_up_serves_metrics_and_health_and_exports_over_otlp() {
    use labssh_testkit::process::{free_port, Proc};

    telemetry();
    let _serial = SERIAL.lock().await;
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_test_image)
        .await
        .unwrap()
        .expect("test image");
    // This test's own receiver: `labssh up` is another process.
    let receiver = OtlpReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = labssh_testkit::unique("lu");
    let _cleanup = labssh_testkit::docker::Cleanup {
        prefix: prefix.clone(),
    };
    std::fs::write(
        dir.path().join("agent.toml"),
        format!("name = \"local\"\ncapacity = 10\ncontainer_prefix = \"{prefix}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("controller.toml"), lab::controller_toml()).unwrap();
    labssh_proxy::users::add_user(
        &dir.path().join("users.toml"),
        "alice",
        Some(lab::ALICE_PW),
        None,
    )
    .unwrap();

    let (ssh_port, http_port) = (free_port(), free_port());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"));
    cmd.arg("up")
        .arg("--dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{ssh_port}")])
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(["--otlp", &receiver.endpoint()])
        // Export promptly: the process is killed at the end, not drained.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("RUST_LOG");
    let mut up = Proc::start("labssh-up", cmd, dir.path()).unwrap();
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();

    // /healthz answers at once; /readyz once the agent has registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = labssh_testkit::telemetry::http::get(http, "/readyz").await;
        if ready.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(up.running(), "labssh up exited: {}", up.log_text());
        assert!(
            Instant::now() < deadline,
            "not ready: {ready:?} {}",
            up.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = labssh_testkit::telemetry::http::get(http, "/healthz")
        .await
        .unwrap();
    assert_eq!(health.status, 200);

    let ssh = labssh_testkit::ssh::Ssh::new(([127, 0, 0, 1], ssh_port).into()).unwrap();
    let out = ssh.run("alice", &Lab::alice(), &["echo hi"]).await.unwrap();
    assert_eq!(
        stdout(&out),
        "hi\n",
        "stderr={} log={}",
        stderr(&out),
        up.log_text()
    );

    // The whole in-process cluster on one /metrics.
    let metrics = scrape(http).await.unwrap();
    assert_eq!(metrics.sum("labssh_login_seconds_count", &[]), 1.0);
    assert_eq!(metrics.sum("labssh_placements_total", &[]), 1.0);
    assert_eq!(
        metrics.sum("labssh_agent_capacity", &[("agent", "local")]),
        10.0
    );

    // --otlp: the login's trace and the metrics reach the receiver.
    let spans = receiver
        .wait_spans(EXPORT_TIMEOUT, |spans| {
            ["ssh", "controller.place", "agent.session"]
                .iter()
                .all(|n| spans.iter().any(|s| s.name == *n))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; log: {}", up.log_text()));
    assert!(spans.iter().all(|s| s.service == "labssh"), "{spans:?}");
    let deadline = Instant::now() + EXPORT_TIMEOUT;
    while !receiver.metric_names().contains("labssh_login_seconds") {
        assert!(
            Instant::now() < deadline,
            "no OTLP metrics: {:?}",
            receiver.metric_names()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop it as an operator would, so the agent removes its firewall rules.
    up.terminate();
    for _ in 0..200 {
        if !up.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    up.kill();
}

/// The web front door's figures: requests by route and status class with their
/// times, the bytes relayed, connections closed again, and named lookups answered
/// from the replica's short cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_front_door_counts_requests_bytes_and_lookups() {
    use lab::browser::{serve_page, Browser};
    use lab::{ALICE_PW, WEB_DOMAIN};

    telemetry();
    let _serial = SERIAL.lock().await;
    let lab = Lab::start(LabOptions::default()).await;
    serve_page(&lab, "alice", "alice-page").await;
    let port = lab.start_web(1).await[0];
    let (addr, _stop_http) = metrics_listener().await;
    let before = scrape(addr).await.unwrap();

    let browser = Browser::new(&lab, "alice");
    let answer = browser.log_in(port, "alice", ALICE_PW).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    const PAGES: f64 = 3.0;
    let first = Instant::now();
    for _ in 0..PAGES as usize {
        let page = browser.get(WEB_DOMAIN, port, "/s/8080-alice/", &[]).await;
        assert_eq!((page.status, page.body.trim()), (200, "alice-page"));
    }
    let within_ttl = first.elapsed() < Duration::from_secs(2);
    let missing = browser.get(WEB_DOMAIN, port, "/s/9999-alice/", &[]).await;
    assert_eq!(missing.status, 404, "{missing:?}");

    // Each curl's connection is counted closed once its task ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(addr).await.unwrap();
        let open = delta(&before, &after, "labssh_web_connections_active", &[]);
        if open == 0.0 || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    assert_eq!(d("labssh_web_connections_active", &[]), 0.0);
    let requests = |route, status| {
        d(
            "labssh_web_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    // The login form, then the post.
    assert_eq!(requests("login", "2xx"), 1.0);
    assert_eq!(requests("login", "3xx"), 1.0);
    assert_eq!(requests("service", "2xx"), PAGES);
    assert_eq!(requests("service", "4xx"), 1.0);
    assert_eq!(
        d("labssh_web_request_seconds_count", &[("route", "service")]),
        PAGES + 1.0
    );
    let down = d(
        "labssh_web_relayed_bytes_total",
        &[("direction", "to_browser")],
    );
    assert!(
        down >= PAGES * "alice-page\n".len() as f64,
        "to_browser: {down}"
    );
    assert!(
        d(
            "labssh_web_relayed_bytes_total",
            &[("direction", "to_service")]
        ) > 0.0
    );
    assert_eq!(d("labssh_web_websockets_active", &[]), 0.0);
    // Every named lookup is counted once; 9999-alice found nothing, so it was
    // asked for and not kept, and alice's pages within the TTL came from the cache.
    let hits = d("labssh_web_service_lookups_total", &[("result", "hit")]);
    let misses = d("labssh_web_service_lookups_total", &[("result", "miss")]);
    assert_eq!(hits + misses, PAGES + 1.0);
    assert!(misses >= 2.0, "misses: {misses}");
    if within_ttl {
        assert_eq!(hits, PAGES - 1.0, "the pages came within the cache's TTL");
    }
    lab.stop().await;
}
