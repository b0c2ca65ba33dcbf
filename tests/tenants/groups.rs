//! Groups and identity ids between students: bob's container of an environment
//! restricted to his class stays closed to alice by every login name and from her
//! own container; with `uid = "ldap"` each student runs as their own uid whatever
//! name they log in with, and neither reads the other's home.

use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{environment_toml, Lab, LabOptions};
use crate::{inspect, serve_file, BOB_PORT};

const ALICE_PW: &str = "alice-groups-pw";
const BOB_PW: &str = "bob-groups-pw";

/// Sets `user`'s password, groups and ids in the lab's users file.
fn account(lab: &Lab, user: &str, password: &str, groups: &[&str], ids: Option<(u32, u32)>) {
    let path = &lab.users_file;
    labssh_proxy::users::add_user(path, user, Some(password), None).unwrap();
    let mut file = labssh_proxy::users::read_file(path).unwrap();
    let record = file.users.get_mut(user).unwrap();
    record.groups = groups.iter().map(|g| g.to_string()).collect();
    record.uid = ids.map(|i| i.0);
    record.gid = ids.map(|i| i.1);
    labssh_proxy::users::write_file(path, &file).unwrap();
}

fn catalogue() -> String {
    [
        environment_toml("cs101env", "allowed_groups = [\"cs101\"]"),
        environment_toml("nfs", "").replace("uid = 1000\ngid = 1000\n", "uid = \"ldap\"\n"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bobs_restricted_container_stays_closed_to_alice() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    account(&lab, "alice", ALICE_PW, &["cs102"], None);
    account(&lab, "bob", BOB_PW, &["cs101"], None);
    let (alice, bob) = (
        Auth::Password(ALICE_PW.into()),
        Auth::Password(BOB_PW.into()),
    );

    // Bob's secret, served from his cs101env container.
    let secret = format!("bob-secret-{}", labssh_testkit::unique("s"));
    let script = format!(
        "echo {secret} > ~/secret; chmod 600 ~/secret; {}",
        serve_file("~/secret", BOB_PORT)
    );
    let mut server = lab
        .ssh
        .command("bob+cs101env", &bob, &[&script])
        .spawn()
        .unwrap();
    lab.wait_listening("bob", "cs101env", BOB_PORT).await;
    let bob_ip = inspect(
        &lab.container_name("bob", "cs101env"),
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!bob_ip.is_empty());

    let before = lab.cleanup.containers();
    for login in [
        "alice+cs101env",
        "alice+CS101ENV",
        "alice+cs101env+bob",
        "alice+cs101env/../default",
        "alice+../bob+cs101env",
        "bob+cs101env",
        "cs101env",
    ] {
        let out = lab
            .ssh
            .run(login, &alice, &["cat ~/secret /home/bob/secret; id"])
            .await
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!text.contains(&secret), "{login}: {text}");
        assert!(!out.status.success(), "{login} got in: {text}");
    }
    assert_eq!(lab.container_id("alice", "cs101env"), None);
    assert_eq!(
        lab.cleanup.containers(),
        before,
        "no container made for any of them"
    );

    // From her own container: his address gives nothing either.
    let out = lab
        .ssh
        .run(
            "alice",
            &alice,
            &[&format!(
                "nc -w 3 {bob_ip} {BOB_PORT} < /dev/null; echo done"
            )],
        )
        .await
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("done") && !text.contains(&secret), "{text}");
    let _ = server.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_uids_are_each_students_own_by_any_login_name() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    account(&lab, "alice", ALICE_PW, &[], Some((20001, 20001)));
    account(&lab, "bob", BOB_PW, &[], Some((20002, 20002)));
    let (alice, bob) = (
        Auth::Password(ALICE_PW.into()),
        Auth::Password(BOB_PW.into()),
    );

    let secret = format!("bob-secret-{}", labssh_testkit::unique("s"));
    let out = lab
        .ssh
        .run(
            "bob+nfs",
            &bob,
            &[&format!(
                "echo {secret} > ~/secret; chmod 600 ~/secret; id -u; stat -c %u ~/secret"
            )],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "20002\n20002\n", "{}", stderr(&out));

    // Whatever name alice logs in with (her own password), she is 20001 or refused.
    for login in [
        "alice+nfs",
        "ALICE+nfs",
        "alice+nfs+bob",
        "alice+../bob+nfs",
        "alice+NFS",
        "bob+nfs",
    ] {
        let out = lab
            .ssh
            .run(
                login,
                &alice,
                &["id -u; cat /home/bob/secret ~/secret; ls -a /home"],
            )
            .await
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!text.contains(&secret), "{login}: {text}");
        assert!(!text.contains("20002"), "{login} ran as bob's uid: {text}");
        // Refused (nothing ran), or in her own container as her own uid.
        let ran = stdout(&out);
        assert!(
            ran.is_empty() || ran.starts_with("20001\n"),
            "{login}: {text}"
        );
    }
    // Her own login ran, as her uid; bob's home is not in her container at all.
    let out = lab
        .ssh
        .run("alice+nfs", &alice, &["id -u; ls /home"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "20001\nalice\n", "{}", stderr(&out));
    lab.stop().await;
}
