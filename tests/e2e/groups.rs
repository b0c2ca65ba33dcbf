//! Groups decide environments, and `uid = "ldap"` environments run students as the
//! uid/gid their identity gives (here from the users file, as LDAP's `uidNumber` and
//! `gidNumber` would): who reaches `alice+cs101env`, what the others are told and
//! which environments they see listed, `id` and the home's owner in a uid-from-identity
//! container, the one clear line for an account with no uid, the refusal when the
//! account's uid changes under an existing container, a prestart that follows the
//! same rules, and a stop hook (run with no login at hand) as the uid recorded on the
//! container.

use std::path::Path;

use labssh_proto::pb::PrestartOutcome as Outcome;
use labssh_testkit::ssh::{stderr, stdout, Auth};

use labssh_testkit::process::free_port;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lab::{connect_when_up, environment_toml, listed, Lab, LabOptions};
use crate::prestart::{prestart, request};

/// `cs101env` for cs101 only, `staffenv` for staff only, `nfs` with ids from the
/// identity.
fn catalogue() -> String {
    [
        environment_toml("cs101env", "allowed_groups = [\"cs101\"]"),
        environment_toml("staffenv", "allowed_groups = [\"staff\"]"),
        // environment_toml's fixed ids, replaced by the identity's.
        environment_toml("nfs", "").replace("uid = 1000\ngid = 1000\n", "uid = \"ldap\"\n"),
    ]
    .concat()
}

/// Sets `user`'s groups and ids in the users file at `path` (and a new password, so
/// a cached login from before does not answer with the old identity).
pub fn set_account(
    path: &Path,
    user: &str,
    password: &str,
    groups: &[&str],
    ids: Option<(u32, u32)>,
) {
    labssh_proxy::users::add_user(path, user, Some(password), None).unwrap();
    let mut file = labssh_proxy::users::read_file(path).unwrap();
    let record = file.users.get_mut(user).unwrap();
    record.groups = groups.iter().map(|g| g.to_string()).collect();
    (record.uid, record.gid) = match ids {
        Some((uid, gid)) => (Some(uid), Some(gid)),
        None => (None, None),
    };
    labssh_proxy::users::write_file(path, &file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_decide_who_reaches_an_environment_and_what_they_see_listed() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    set_account(&lab.users_file, "alice", "alice-pw-1", &["cs101"], None);
    set_account(&lab.users_file, "bob", "bob-pw-1", &["cs102"], None);
    let (alice, bob) = (
        Auth::Password("alice-pw-1".into()),
        Auth::Password("bob-pw-1".into()),
    );

    let out = lab
        .ssh
        .run("alice+cs101env", &alice, &["echo in; id -u"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "in\n1000\n");

    let out = lab
        .ssh
        .run("bob+cs101env", &bob, &["echo in"])
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && stdout(&out).is_empty(), "{err}");
    assert!(
        err.starts_with("labssh: environment 'cs101env' is not available to you; available: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let theirs = listed(&err);
    assert!(theirs.contains(&"default".to_string()), "{theirs:?}");
    for restricted in ["cs101env", "staffenv"] {
        assert!(!theirs.contains(&restricted.to_string()), "{theirs:?}");
    }
    assert_eq!(
        lab.container_id("bob", "cs101env"),
        None,
        "nothing made for bob"
    );

    // The unknown-environment list shows only the student's own, too.
    let out = lab.ssh.run("bob+nope", &bob, &["true"]).await.unwrap();
    let err = stderr(&out);
    assert!(
        err.starts_with("labssh: unknown environment 'nope'; available: "),
        "{err}"
    );
    assert!(!listed(&err).contains(&"cs101env".to_string()), "{err}");
    let out = lab.ssh.run("alice+nope", &alice, &["true"]).await.unwrap();
    let mine = listed(&stderr(&out));
    assert!(mine.contains(&"cs101env".to_string()), "{mine:?}");
    assert!(!mine.contains(&"staffenv".to_string()), "{mine:?}");

    // A forward alone (`ssh -N -L`) is placed the same way: refused, nothing made.
    let local = free_port();
    let spec = format!("{local}:localhost:22");
    let mut client = lab
        .ssh
        .command_with("bob+cs101env", &bob, &["-N", "-L", &spec], &[])
        .spawn()
        .unwrap();
    let mut s = connect_when_up(local).await;
    // The client closes the connection when the channel is refused: nothing read.
    let mut back = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let _ = s.write_all(b"hello\n").await;
        s.read_to_end(&mut back).await
    })
    .await
    .expect("the refused forward is closed");
    assert!(back.is_empty(), "{read:?} {back:?}");
    let _ = client.kill().await;
    assert_eq!(
        lab.container_id("bob", "cs101env"),
        None,
        "nothing made by a forward"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uid_from_the_identity_owns_the_processes_and_the_home() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    set_account(
        &lab.users_file,
        "alice",
        "alice-pw-1",
        &[],
        Some((20001, 20000)),
    );
    set_account(&lab.users_file, "bob", "bob-pw-1", &[], None);
    let alice = Auth::Password("alice-pw-1".into());

    let script = "id -u; id -g; touch ~/made; stat -c %u:%g ~ ~/made; grep ^alice: /etc/passwd";
    let out = lab.ssh.run("alice+nfs", &alice, &[script]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        ["20001", "20000", "20001:20000", "20001:20000"],
        "{text}"
    );
    assert!(lines[4].starts_with("alice:x:20001:20000:"), "{text}");
    // Her default environment keeps its fixed uid.
    let out = lab.ssh.run("alice", &alice, &["id -u"]).await.unwrap();
    assert_eq!(stdout(&out), "1000\n", "{}", stderr(&out));

    // An account with no uid: one clear line, nothing made.
    let out = lab
        .ssh
        .run("bob+nfs", &Auth::Password("bob-pw-1".into()), &["echo in"])
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && stdout(&out).is_empty(), "{err}");
    assert!(
        err.contains(
            "environment 'nfs' takes your uid from the directory, and your account has none"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(lab.container_id("bob", "nfs"), None);

    // The directory gives alice another uid: her container is not used as it.
    set_account(
        &lab.users_file,
        "alice",
        "alice-pw-2",
        &[],
        Some((20002, 20000)),
    );
    let out = lab
        .ssh
        .run(
            "alice+nfs",
            &Auth::Password("alice-pw-2".into()),
            &["id -u"],
        )
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && stdout(&out).is_empty(), "{err}");
    assert!(
        err.contains("your container was made for uid 20001 gid 20000, and your account now has uid 20002 gid 20000; ask your operator"),
        "{err}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prestart_follows_allowed_groups_and_takes_ids_from_the_users_file() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    set_account(
        &lab.users_file,
        "carol",
        "pw",
        &["cs101"],
        Some((20003, 20000)),
    );
    set_account(&lab.users_file, "dave", "pw", &["cs102"], None);

    let class = prestart(&lab, request("cs101env", &["carol", "dave"], ""))
        .await
        .unwrap();
    assert_eq!(
        class.outcome("carol"),
        Outcome::Created,
        "{:?}",
        class.results
    );
    assert_eq!(class.outcome("dave"), Outcome::Failed);
    assert!(
        class.results["dave"]
            .message
            .contains("not allowed: environment 'cs101env' is for the groups cs101"),
        "{:?}",
        class.results["dave"]
    );
    assert_eq!(lab.container_id("dave", "cs101env"), None);

    let nfs = prestart(&lab, request("nfs", &["carol", "dave"], ""))
        .await
        .unwrap();
    assert_eq!(nfs.outcome("carol"), Outcome::Created, "{:?}", nfs.results);
    assert_eq!(nfs.outcome("dave"), Outcome::Failed);
    assert!(
        nfs.results["dave"]
            .message
            .contains("takes the uid from the account"),
        "{:?}",
        nfs.results["dave"]
    );
    let ids = labssh_testkit::docker::docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"labssh.ids\"}}",
        &lab.container_name("carol", "nfs"),
    ])
    .unwrap();
    assert_eq!(ids.trim(), "20003:20000");
    // Her first login finds the prestarted container, as her own uid.
    let out = lab
        .ssh
        .run(
            "carol+nfs",
            &Auth::Password("pw".into()),
            &["id -u; stat -c %u ~"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "20003\n20003\n", "{}", stderr(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_hook_long_after_the_login_runs_as_the_recorded_uid() {
    // Stopped after 2 s idle; its stop hook (no login at hand then) writes its uid.
    let env = environment_toml("nfsnap", "idle_stop_after = \"2s\"")
        .replace("uid = 1000\ngid = 1000\n", "uid = \"ldap\"\n");
    let hook = "\n[[environments.nfsnap.hooks]]\non = \"stop\"\n\
                run = [\"/bin/sh\", \"-c\", \"id -u > ~/stop-uid\"]\n";
    let lab = Lab::start(LabOptions {
        catalogue: format!("{env}{hook}"),
        ..Default::default()
    })
    .await;
    set_account(
        &lab.users_file,
        "alice",
        "alice-pw-1",
        &[],
        Some((20001, 20000)),
    );
    let alice = Auth::Password("alice-pw-1".into());
    let out = lab
        .ssh
        .run("alice+nfsnap", &alice, &["true"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    lab.wait_state("alice", "nfsnap", "exited").await;
    let out = lab
        .ssh
        .run("alice+nfsnap", &alice, &["cat ~/stop-uid"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "20001\n", "{}", stderr(&out));
    lab.stop().await;
}
