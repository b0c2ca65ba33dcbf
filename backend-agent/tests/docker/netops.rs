//! The network and file operations port forwarding and sftp build on (resolve,
//! container_addresses, listen_tcp, connect_tcp, find_executable), against the real
//! engine, on a helper container and on a `spawn = "exec"` container (where the agent
//! enters the container's namespaces itself).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::support::{
    assert_path, collect, docker_cli, ensure_on, environment, run_script, Scratch, STEP,
};
use labssh_agent::backend::SpawnPath;
use labssh_agent::backend::{Backend, BackendError, ExitStatus, Process, SpawnSpec};
use labssh_agent::DockerBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_paths!(listeners_accept_connections_from_inside);
on_both_paths!(a_taken_port_says_why);
on_both_paths!(connections_carry_bytes_both_ways);
on_both_paths!(names_resolve_as_in_the_container);
on_both_paths!(executables_are_found_inside_the_container);

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

/// Starts `sh -c script` as `user` without waiting for it.
async fn start(backend: &DockerBackend, container: &str, user: &str, script: &str) -> Process {
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let spec = SpawnSpec::for_user(user, &environment(), argv, Vec::new(), None);
    tokio::time::timeout(STEP, backend.spawn(container, spec))
        .await
        .expect("spawn in time")
        .expect("spawn")
}

/// Connects to `host:port` in the container, retrying while the server there starts.
async fn connect_when_up(
    backend: &DockerBackend,
    container: &str,
    host: &str,
    port: u16,
) -> Box<dyn labssh_agent::backend::Duplex> {
    let mut last = None;
    for _ in 0..100 {
        match backend.connect_tcp(container, host, port).await {
            Ok(conn) => return conn,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {host}:{port}: {last:?}");
}

async fn listeners_accept_connections_from_inside(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "lisa", path).await;
    let listener = backend
        .listen_tcp(&c.container_id, localhost(0))
        .await
        .expect("listen");
    let bound = listener.local_addr().unwrap();
    assert_eq!(bound.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
    assert_ne!(bound.port(), 0, "the kernel picked a port");

    // The container's own loopback reaches the agent's listener: it is in there.
    let script = format!("echo hi | nc 127.0.0.1 {}", bound.port());
    let client = start(&backend, &c.container_id, "lisa", &script).await;
    let (mut conn, peer) = tokio::time::timeout(STEP, listener.accept())
        .await
        .expect("a connection in time")
        .expect("accept");
    assert_eq!(peer.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
    let mut got = [0u8; 3];
    tokio::time::timeout(STEP, conn.read_exact(&mut got))
        .await
        .expect("bytes in time")
        .unwrap();
    assert_eq!(&got, b"hi\n");
    drop(conn);
    let (_, err, status) = collect(client).await;
    assert_eq!(status, ExitStatus::Code(0), "{err}");
}

async fn a_taken_port_says_why(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "tara", path).await;
    let first = backend
        .listen_tcp(&c.container_id, localhost(0))
        .await
        .unwrap();
    let port = first.local_addr().unwrap().port();
    let taken = |result: Result<tokio::net::TcpListener, BackendError>, port: u16| match result {
        Err(BackendError::ListenFailed { address, message }) => {
            assert_eq!(address, format!("127.0.0.1:{port}"));
            assert_eq!(message, "Address already in use");
        }
        Err(other) => panic!("{other}"),
        Ok(l) => panic!("listening twice on {:?}", l.local_addr()),
    };
    taken(
        backend.listen_tcp(&c.container_id, localhost(port)).await,
        port,
    );

    // A port a process in the container listens on is taken too.
    let server = start(
        &backend,
        &c.container_id,
        "tara",
        "exec httpd -f -p 9123 -h /tmp",
    )
    .await;
    connect_when_up(&backend, &c.container_id, "127.0.0.1", 9123).await;
    taken(
        backend.listen_tcp(&c.container_id, localhost(9123)).await,
        9123,
    );
    server.control.signal("TERM").await.unwrap();
    let (_, _, status) = collect(server).await;
    assert_eq!(status, ExitStatus::Signal("TERM".into()));
    // Free once httpd is gone.
    let again = backend.listen_tcp(&c.container_id, localhost(9123)).await;
    assert!(again.is_ok(), "{:?}", again.err());

    let err = backend
        .listen_tcp(&c.container_id, "192.0.2.1:0".parse().unwrap())
        .await
        .expect_err("not an address of the container");
    assert!(err.to_string().contains("assign"), "{err}");
}

async fn connections_carry_bytes_both_ways(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "conn", path).await;
    let server = start(
        &backend,
        &c.container_id,
        "conn",
        "echo from-container | nc -l -p 9000",
    )
    .await;
    // By name: the container's own host name, known only to its /etc/hosts.
    let mut conn = connect_when_up(&backend, &c.container_id, "conn-default", 9000).await;
    // The container's side first, to its EOF: busybox nc exits at its peer's EOF,
    // and it sends its stdin only once `echo` has written into the pipe, so an EOF
    // sent before that would race `echo` and could leave nothing to read. After
    // its EOF the other direction still carries bytes (a half-close, not a close).
    let mut back = String::new();
    tokio::time::timeout(STEP, conn.read_to_string(&mut back))
        .await
        .expect("the server answers in time")
        .unwrap();
    assert_eq!(back, "from-container\n");
    conn.write_all(b"from-agent\n").await.unwrap();
    conn.shutdown().await.unwrap();
    let (out, err, status) = collect(server).await;
    assert_eq!(
        (out.as_str(), status),
        ("from-agent\n", ExitStatus::Code(0)),
        "{err}"
    );

    let refused = backend
        .connect_tcp(&c.container_id, "127.0.0.1", 1)
        .await
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(
        refused.contains("127.0.0.1:1") && refused.contains("refused"),
        "{refused}"
    );
    // By name, the first address's reason is the one told.
    let refused = backend
        .connect_tcp(&c.container_id, "localhost", 1)
        .await
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(
        refused.contains("(127.0.0.1:1)") && refused.contains("refused"),
        "{refused}"
    );
}

async fn names_resolve_as_in_the_container(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "rene", path).await;
    let id = &c.container_id;

    let local = backend.resolve(id, "localhost", 80).await.unwrap();
    assert!(local.contains(&localhost(80)), "{local:?}");
    assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");

    // The container's host name is in its /etc/hosts, not in the host's.
    let own = backend.resolve(id, "rene-default", 22).await.unwrap();
    assert!(!own.is_empty());
    assert!(own.iter().all(|a| a.port() == 22), "{own:?}");
    let mine = backend.container_addresses(id).await.unwrap();
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|ip| !ip.is_loopback()), "{mine:?}");
    for addr in &own {
        assert!(mine.contains(&addr.ip()), "{addr} is not among {mine:?}");
    }
    // The same addresses Docker reports.
    let docker: Vec<IpAddr> = docker_cli(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.GlobalIPv6Address}} {{end}}",
        id,
    ])
    .split_whitespace()
    .map(|s| s.parse().unwrap())
    .collect();
    let mut mine_sorted = mine.clone();
    mine_sorted.sort();
    let mut docker_sorted = docker;
    docker_sorted.sort();
    docker_sorted.dedup();
    assert_eq!(mine_sorted, docker_sorted);

    assert_eq!(
        backend.resolve(id, "192.0.2.7", 5).await.unwrap(),
        vec!["192.0.2.7:5".parse().unwrap()]
    );
    assert_eq!(
        backend.resolve(id, "[2001:db8::1]", 5).await.unwrap(),
        vec!["[2001:db8::1]:5".parse().unwrap()]
    );
    let err = backend
        .resolve(id, "no-such-host.invalid", 80)
        .await
        .expect_err("unknown name")
        .to_string();
    assert!(err.contains("cannot resolve"), "{err}");
}

async fn executables_are_found_inside_the_container(path: &str) {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "fred", path).await;
    let id = &c.container_id;
    // An executable on the host that the container does not have.
    let host_tool = which_on_host("docker");
    let setup = format!(
        "touch /tmp/plain && chmod 644 /tmp/plain && mkdir -m 755 /tmp/dir && \
         ln -s /bin/busybox /tmp/abs && ln -s {host_tool} /tmp/to-host && \
         test ! -e {host_tool}"
    );
    let (_, err, status) = run_script(&*backend, id, "fred", &setup).await;
    assert_eq!(status, ExitStatus::Code(0), "{err}");

    let find = |candidates: &'static [&'static str]| {
        let backend = backend.clone();
        let id = id.clone();
        async move { backend.find_executable(&id, candidates).await.unwrap() }
    };
    // /bin/sh is a symlink to busybox.
    assert_eq!(
        find(&["/no/such/file", "/tmp/plain", "/tmp/dir", "/bin/sh"]).await,
        Some("/bin/sh".to_owned())
    );
    assert_eq!(
        find(&["/bin/busybox", "/bin/sh"]).await,
        Some("/bin/busybox".to_owned()),
        "the first that qualifies"
    );
    assert_eq!(
        find(&["/no/such/file", "/tmp/plain", "/tmp/dir"]).await,
        None
    );
    // An absolute symlink resolves inside the container: to its busybox, and never
    // to the host's files.
    assert_eq!(find(&["/tmp/abs"]).await, Some("/tmp/abs".to_owned()));
    let leaked = backend
        .find_executable(id, &["/tmp/to-host", host_tool.as_str()])
        .await
        .unwrap();
    assert_eq!(leaked, None);
}

/// The absolute path of `program` on the host (it must be an executable file).
fn which_on_host(program: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':') {
        let candidate = std::path::Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate.to_string_lossy().into_owned();
            }
        }
    }
    panic!("{program} is not on the host's PATH");
}

/// A helper container whose socket vanished (root in it deleted it, say): every
/// network operation still works, through the helper, restored.
#[tokio::test]
async fn a_helper_whose_socket_vanished_is_restored() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    let c = ensure_on(&backend, "sid", "helper").await;
    docker_cli(&["exec", &c.container_id, "rm", "/.labssh/run/helper.sock"]);

    let own = backend
        .resolve(&c.container_id, "sid-default", 1)
        .await
        .unwrap();
    assert!(!own.is_empty());
    let listener = backend
        .listen_tcp(&c.container_id, localhost(0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(b"via the restored helper\n").await.unwrap();
    });
    let mut conn = connect_when_up(&backend, &c.container_id, "localhost", port).await;
    let mut got = String::new();
    tokio::time::timeout(STEP, conn.read_to_string(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, "via the restored helper\n");
    assert_path(&backend, &c.container_id, SpawnPath::Helper).await;
    accept.await.unwrap();
}
