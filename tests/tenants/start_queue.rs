//! The start queue between students: alice's many parallel logins hold one place per
//! container, bob's place counts only containers ahead of him, and no line bob reads
//! names her.

use crate::lab::queue::{gate, lab, place_of, wait_held, Login};
use crate::lab::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_parallel_logins_take_one_place_per_container_and_bob_reads_only_his() {
    let gate = gate().await;
    let lab = lab(&gate, |c| c.start_concurrency = 1).await;
    // Three logins into one container: one start at the gate, the others wait on
    // that container, not in the queue.
    let mut alice: Vec<Login> = (0..3)
        .map(|_| Login::start(&lab, "alice+e1", &Lab::alice()))
        .collect();
    wait_held(&gate, 1).await;
    // Two more into her second container: one place.
    alice.extend((0..2).map(|_| Login::start(&lab, "alice+e2", &Lab::alice())));
    let deadline = tokio::time::Instant::now() + crate::lab::queue::WAIT;
    while !alice.iter().any(|l| l.places() == [0]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice+e2 never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let bob = Login::start(&lab, "bob+e1", &Lab::bob());
    bob.wait_line("place", |l| place_of(l).is_some()).await;
    assert_eq!(
        bob.places(),
        [1],
        "one container of alice's ahead: {}",
        bob.err()
    );
    assert_eq!(gate.held(), 1);
    gate.open();
    let (code, out, err) = bob.finish().await;
    assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
    assert!(!err.contains("alice"), "bob read about alice: {err}");
    for login in alice {
        let (code, out, err) = login.finish().await;
        assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
        assert!(!err.contains("bob"), "alice read about bob: {err}");
    }
    assert_eq!(gate.passed(), 3, "one start per container");
    lab.stop().await;
}
