//! What the directory says a student is, end to end: groups (posixGroup
//! `memberUid` and `memberOf`) decide which environments they reach and
//! which they see listed, and `uidNumber`/`gidNumber` are who they are in a
//! `uid = "ldap"` container and who owns its home. The credential cache keeps
//! the identity, so a student cached before the directory went down keeps
//! their groups and ids while it is down.

use labssh_testkit::slapd::{Slapd, CAROL_PW, ERIN_PW};
use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{environment_toml, listed, Lab, LabOptions};

/// `cs101env` for cs101 (carol by memberUid), `staffenv` for staff (carol by
/// memberOf), `nfs` with the directory's ids.
fn catalogue() -> String {
    [
        environment_toml("cs101env", "allowed_groups = [\"cs101\"]"),
        environment_toml("staffenv", "allowed_groups = [\"staff\"]"),
        environment_toml("nfs", "").replace("uid = 1000\ngid = 1000\n", "uid = \"ldap\"\n"),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_groups_and_ids_decide_environments_and_who_runs_in_them() {
    let mut server = Slapd::start("").expect("slapd");
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        proxy_auth: Some(crate::auth(&server, server.url())),
        ..Default::default()
    })
    .await;
    let (carol, erin) = (
        Auth::Password(CAROL_PW.into()),
        Auth::Password(ERIN_PW.into()),
    );

    // carol is in cs101 (memberUid) and staff (memberOf): both open.
    for env in ["cs101env", "staffenv"] {
        let out = lab
            .ssh
            .run(&format!("carol+{env}"), &carol, &["echo in"])
            .await
            .unwrap();
        assert_eq!(stdout(&out), "in\n", "{env}: {}", stderr(&out));
    }
    // erin is in no group: told so, and shown only her own environments.
    let out = lab
        .ssh
        .run("erin+cs101env", &erin, &["echo in"])
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && stdout(&out).is_empty(), "{err}");
    assert!(
        err.contains("environment 'cs101env' is not available to you"),
        "{err}"
    );
    let list = listed(&err);
    assert!(
        list.iter().any(|e| e == "default") && list.iter().any(|e| e == "nfs"),
        "{err}"
    );
    assert!(
        !list.iter().any(|e| e == "cs101env" || e == "staffenv"),
        "only her own: {err}"
    );
    assert_eq!(lab.container_id("erin", "cs101env"), None);

    // uidNumber/gidNumber run the processes and own the home.
    let script = "id -u; id -g; touch ~/made; stat -c %u:%g ~ ~/made";
    let out = lab.ssh.run("carol+nfs", &carol, &[script]).await.unwrap();
    assert_eq!(
        stdout(&out),
        "20001\n20000\n20001:20000\n20001:20000\n",
        "{}",
        stderr(&out)
    );
    let out = lab.ssh.run("erin+nfs", &erin, &["id -u"]).await.unwrap();
    assert_eq!(stdout(&out), "20003\n", "{}", stderr(&out));

    // The directory down: carol's cached login keeps her groups and ids.
    server.stop();
    let out = lab.ssh.run("carol+nfs", &carol, &["id -u"]).await.unwrap();
    assert_eq!(stdout(&out), "20001\n", "{}", stderr(&out));
    let out = lab
        .ssh
        .run("carol+staffenv", &carol, &["echo still"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "still\n", "{}", stderr(&out));
    lab.stop().await;
}
