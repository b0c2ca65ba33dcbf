//! Finding 6, crafted names: container names used to be `PREFIX-USER-ENV`, so user
//! `a-b` in environment `c` and user `a` in environment `b-c` met in one name, and one
//! of them was refused (or, with labels not checked, would have shared a container).

use crate::lab::{Lab, LabOptions};
use labssh_testkit::ssh::{stderr, stdout, Auth};

const PASSWORD: &str = "names-are-not-containers";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_and_environments_whose_names_run_together_get_their_own_containers() {
    let env = |name: &str| {
        format!(
            "[environments.{name}]\nimage = \"{}\"\nspawn = \"{}\"\nuid = 1000\ngid = 1000\n",
            labssh_testkit::docker::TEST_IMAGE,
            crate::lab::spawn_path()
        )
    };
    let lab = Lab::start(LabOptions {
        catalogue: format!("{}{}", env("c"), env("b-c")),
        ..Default::default()
    })
    .await;
    for user in ["a-b", "a"] {
        labssh_proxy::users::add_user(&lab.users_file, user, Some(PASSWORD), None).unwrap();
    }
    let auth = Auth::Password(PASSWORD.into());
    let first = lab
        .ssh
        .run("a-b+c", &auth, &["echo mine > ~/who; hostname; cat ~/who"])
        .await
        .unwrap();
    assert_eq!(
        (first.status.code(), stdout(&first).as_str()),
        (Some(0), "a-b-c\nmine\n"),
        "{}",
        stderr(&first)
    );
    let second = lab
        .ssh
        .run("a+b-c", &auth, &["echo $USER; cat ~/who 2>&1; ls /home"])
        .await
        .unwrap();
    let text = stdout(&second);
    assert_eq!(second.status.code(), Some(0), "{text} {}", stderr(&second));
    assert!(text.starts_with("a\n"), "{text}");
    assert!(!text.contains("mine"), "a reads a-b's file: {text}");
    assert!(!text.contains("a-b"), "a sees a-b's home: {text}");
    let (one, two) = (
        lab.container_id("a-b", "c").expect("a-b's container"),
        lab.container_id("a", "b-c").expect("a's container"),
    );
    assert_ne!(one, two);
    lab.stop().await;
}
