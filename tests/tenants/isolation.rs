//! Isolation per environment between students: a shared course-data volume is
//! mounted read-only, so alice cannot plant or change files bob will read there (not
//! even as root in an environment that runs students as root, not even with the files'
//! own modes wide open); and a device one environment lists is not in another's
//! containers, nor can alice make it herself.

use labssh_testkit::docker::{docker, TEST_IMAGE};

use crate::as_alice;
use crate::lab::{spawn_path, Lab, LabOptions};

/// A Docker volume holding course data, removed when dropped (also when the test
/// fails).
struct CourseData(String);

impl CourseData {
    /// A new volume whose `notes` file and directory anyone may write, as far as
    /// their modes go.
    fn create() -> CourseData {
        let name = labssh_testkit::unique("course");
        docker(&["volume", "create", &name]).expect("create the course-data volume");
        docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{name}:/d"),
            TEST_IMAGE,
            "sh",
            "-c",
            "echo lecture-1 > /d/notes && chmod 666 /d/notes && chmod 777 /d",
        ])
        .expect("fill the course-data volume");
        CourseData(name)
    }
}

impl Drop for CourseData {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// `course` (a student environment) and `courseroot` (students as root, with the
/// capabilities to override file modes) mounting `volume`, and `fuse` listing
/// /dev/fuse.
fn catalogue(volume: &str) -> String {
    let spawn = spawn_path();
    format!(
        r#"
[environments.course]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
uid = 1000
gid = 1000
mounts = ["{volume}:/srv/course"]

[environments.courseroot]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
run_as_root = true
cap_add = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "MKNOD"]
mounts = ["{volume}:/srv/course"]

[environments.fuse]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
uid = 1000
gid = 1000
devices = ["/dev/fuse"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alice_cannot_plant_course_data_or_reach_devices_not_listed() {
    let volume = CourseData::create();
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(&volume.0),
        ..Default::default()
    })
    .await;
    for login in ["alice+course", "alice+courseroot"] {
        let text = as_alice(
            &lab,
            login,
            "echo planted > /srv/course/notes; echo planted > /srv/course/.bashrc; \
             mkdir /srv/course/x; chmod 777 /srv/course/notes; cat /srv/course/notes",
        )
        .await;
        assert!(text.contains("lecture-1"), "{login}: {text}");
        assert_eq!(
            text.matches("Read-only file system").count(),
            4,
            "{login}: every write refused: {text}"
        );
    }
    // Bob reads the course data as it was, nothing of alice's in it.
    let out = lab
        .ssh
        .run(
            "bob+course",
            &Lab::bob(),
            &["ls -a /srv/course; cat /srv/course/notes"],
        )
        .await
        .unwrap();
    assert_eq!(
        labssh_testkit::ssh::stdout(&out),
        ".\n..\nnotes\nlecture-1\n",
        "{}",
        labssh_testkit::ssh::stderr(&out)
    );

    // Bob's environment lists /dev/fuse; alice's default one does not, and root with
    // CAP_MKNOD in hers cannot make the node work (the device cgroup refuses it).
    let out = lab
        .ssh
        .run(
            "bob+fuse",
            &Lab::bob(),
            &["test -c /dev/fuse && echo fuse-here"],
        )
        .await
        .unwrap();
    assert_eq!(labssh_testkit::ssh::stdout(&out), "fuse-here\n");
    let text = as_alice(
        &lab,
        "alice",
        "test -e /dev/fuse && echo fuse-visible; ls /dev",
    )
    .await;
    assert!(!text.contains("fuse"), "{text}");
    let text = as_alice(
        &lab,
        "alice+courseroot",
        "mknod /tmp/fuse c 10 229 && cat /tmp/fuse; echo; test -e /dev/fuse && echo fuse-visible",
    )
    .await;
    assert!(!text.contains("fuse-visible"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
}
