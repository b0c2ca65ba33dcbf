//! Straight across the network: from inside alice's containers, to bob's container by
//! its address, its IPv6 addresses and its container name, and from an environment
//! whose egress allows anything public (`alice+open`) and a root one (`alice+admin`).

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, Bob, BOB_PORT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_containers_cannot_connect_to_bobs() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let bob_name = lab.container_name("bob", "default");
    let mut targets = vec![bob.ip.clone(), bob_name.clone()];
    targets.extend(bob.ipv6.iter().map(|a| format!("{a}%eth0")));
    for login in ["alice", "alice+open", "alice+admin"] {
        for target in &targets {
            let got = as_alice(
                &lab,
                login,
                &format!("nc -w 3 {target} {BOB_PORT} < /dev/null 2>&1"),
            )
            .await;
            bob.assert_not_in(&got, &format!("{login}: nc {target} {BOB_PORT}"));
        }
    }
    lab.stop().await;
}
