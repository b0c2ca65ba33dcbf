//! Students from the directory (a real slapd): carol's directory password or
//! key opens no login of erin's, whether the directory answers or only the
//! credential cache does (entries are per user), and nothing of erin's is
//! made by the attempts.

use labssh_testkit::slapd::{self, Slapd, CAROL_PW};
use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{Lab, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn carols_directory_credentials_open_no_login_of_erins() {
    let keys = tempfile::tempdir().unwrap();
    let carol_key = keys.path().join("carol");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&carol_key)
        .status()
        .unwrap();
    assert!(status.success());
    let carol_public = std::fs::read_to_string(carol_key.with_extension("pub")).unwrap();
    // dave: carol's key in his entry is carol's, not erin's.
    let mut server = Slapd::start(&slapd::account_ldif(
        "dave",
        "dave-pw",
        20002,
        20000,
        &[],
        &[carol_public.trim()],
    ))
    .expect("slapd");
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(crate::lab::ldap_auth(&server, server.url())),
        ..Default::default()
    })
    .await;
    let carol = Auth::Password(CAROL_PW.into());
    let out = lab.ssh.run("carol", &carol, &["echo in"]).await.unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));

    let attempts = |phase: &'static str| {
        let lab = &lab;
        let carol_key = carol_key.clone();
        async move {
            for login in ["erin", "erin+default", "erin+open", "ERIN"] {
                for auth in [
                    Auth::Password(CAROL_PW.into()),
                    Auth::KeyboardInteractive(CAROL_PW.into()),
                    Auth::Key(carol_key.clone()),
                ] {
                    let out = lab.ssh.run(login, &auth, &["echo in"]).await.unwrap();
                    assert!(
                        !out.status.success() && stdout(&out).is_empty(),
                        "{phase}: carol's credential let {login:?} in: {}",
                        stderr(&out)
                    );
                }
            }
        }
    };
    attempts("directory up").await;
    // Only the cache can answer now; it holds carol's entry, not erin's.
    server.stop();
    attempts("directory down").await;
    assert_eq!(lab.container_id("erin", "default"), None);
    assert_eq!(lab.container_id("erin", "open"), None);
    lab.stop().await;
}
