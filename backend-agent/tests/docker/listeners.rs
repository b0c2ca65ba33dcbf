//! Discovery against the real engine: the TCP ports listening in a container, read
//! from its socket tables by labssh-init (helper containers) or by the agent from
//! inside the container's network (Docker exec ones), appear while something listens
//! and are gone once it stops.

use std::net::SocketAddr;
use std::time::Instant;

use crate::support::{ensure_on, run_script, Scratch, STEP};
use labssh_agent::backend::{Backend, ExitStatus};

/// Polls the listeners of `container` until `done` holds of them; the last reading.
async fn until(
    backend: &dyn Backend,
    container: &str,
    done: impl Fn(&[SocketAddr]) -> bool,
) -> Vec<SocketAddr> {
    let deadline = Instant::now() + STEP;
    loop {
        let found = backend.listeners(container).await.expect("listeners read");
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "still {found:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn listening_ports_are_read_from_the_containers_own_tables() {
    let scratch = Scratch::new();
    let backend = scratch.backend().await;
    for path in ["helper", "exec"] {
        let user = format!("lena{path}");
        let c = ensure_on(&backend, &user, path).await;
        let id = c.container_id.as_str();
        assert_eq!(backend.listeners(id).await.unwrap(), Vec::new(), "{path}");
        // busybox httpd goes to the background itself and outlives the session.
        let (_, err, status) = run_script(
            &*backend,
            id,
            &user,
            "httpd -p 8080 -h /tmp && httpd -p 127.0.0.1:9090 -h /tmp",
        )
        .await;
        assert_eq!(status, ExitStatus::Code(0), "{path}: {err}");
        let found = until(&*backend, id, |f| f.len() >= 2).await;
        let ports: Vec<(u16, bool)> = found
            .iter()
            .map(|a| (a.port(), a.ip().is_loopback()))
            .collect();
        assert_eq!(ports, [(8080, false), (9090, true)], "{path}: {found:?}");
        assert!(found[0].ip().is_unspecified(), "{path}: {found:?}");
        let (_, err, status) = run_script(&*backend, id, &user, "killall httpd").await;
        assert_eq!(status, ExitStatus::Code(0), "{path}: {err}");
        until(&*backend, id, <[SocketAddr]>::is_empty).await;
    }
}
