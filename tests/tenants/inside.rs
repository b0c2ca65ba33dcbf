//! From inside alice's container: the helper's socket and its directory, labssh's and
//! Docker's sockets, other containers' processes and mounts.

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, Bob, BOB_PORT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_inside_alices_container_leads_to_bob() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let bob_volume = crate::inspect(
        &lab.container_name("bob", "default"),
        "{{range .Mounts}}{{if eq .Destination \"/home/bob\"}}{{.Name}}{{end}}{{end}}",
    );
    assert!(!bob_volume.is_empty(), "bob's home is a named volume");
    // As a plain student: the helper's directory is closed to her.
    let plain = as_alice(
        &lab,
        "alice",
        "ls -la /.labssh/run 2>&1; cat /.labssh/run/* 2>&1",
    )
    .await;
    if crate::lab::spawn_path() == "helper" {
        assert!(
            plain.contains("Permission denied"),
            "alice lists the helper's directory: {plain}"
        );
    }
    for login in ["alice", "alice+admin"] {
        // labssh's and Docker's sockets are nowhere in her container.
        let sockets = as_alice(
            &lab,
            login,
            "ls -d /run/labssh /var/run/labssh /var/run/docker.sock /run/docker.sock \
             /var/lib/docker /run/containerd 2>/dev/null; \
             for d in $(awk '$3 !~ /^(proc|sysfs)$/ {print $2}' /proc/mounts); do \
             find \"$d\" -xdev -type s 2>/dev/null; done",
        )
        .await;
        for line in sockets.lines().filter(|l| *l != "alice-done") {
            assert!(
                line.starts_with("/.labssh/run/"),
                "{login} sees {line:?} in her container"
            );
        }
        // Bob's processes and mounts are not in her /proc.
        let procs = as_alice(
            &lab,
            login,
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done; \
             cat /proc/self/mountinfo /proc/1/mountinfo 2>&1; \
             cat /proc/1/root/home/bob/secret /home/bob/secret 2>&1; hostname",
        )
        .await;
        bob.assert_not_in(&procs, &format!("{login}'s /proc"));
        assert!(
            !procs.contains(&format!("-p {BOB_PORT}")),
            "{login} sees bob's server process: {procs}"
        );
        assert!(
            !procs.contains(&bob_volume),
            "{login} sees bob's volume mounted: {procs}"
        );
        assert!(
            !procs.contains(&lab.container_name("bob", "default")),
            "{login} sees bob's container name: {procs}"
        );
    }
    lab.stop().await;
}
