//! The users file's tests: reloads, modes, the dummy hash, names and groups.

use super::*;

#[test]
fn add_user_then_reload_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let users = Users::open(&path).unwrap();
    assert!(users.current().is_empty());

    add_user(&path, "alice", Some("s3cret"), None).unwrap();
    let snapshot = users.current();
    let alice = snapshot.get("alice").expect("alice after reload");
    let hash = alice.password_hash.as_deref().unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(verify_password("s3cret", hash));
    assert!(!verify_password("wrong", hash));
    assert!(!std::fs::read_to_string(&path).unwrap().contains("s3cret"));

    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V bob@laptop";
    add_user(&path, "bob", None, Some(key)).unwrap();
    add_user(&path, "bob", None, Some(key)).unwrap();
    let snapshot = users.current();
    assert_eq!(snapshot["bob"].keys.len(), 1);
    assert!(snapshot["bob"].password_hash.is_none());
}

#[test]
fn a_broken_edit_keeps_the_previous_users() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    add_user(&path, "alice", Some("pw"), None).unwrap();
    let users = Users::open(&path).unwrap();
    std::fs::write(&path, "[users.alice\nbroken").unwrap();
    assert!(users.current().contains_key("alice"));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_users_file_is_created_0600_and_never_widened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    add_user(&path, "alice", Some("pw"), None).unwrap();
    assert_eq!(mode(&path), 0o600, "a new file");
    add_user(&path, "bob", Some("pw"), None).unwrap();
    assert_eq!(mode(&path), 0o600, "after an update");
    // An operator's group-readable file (the proxy's group) stays so; one an
    // older labssh left world-readable loses that.
    for (before, after) in [(0o640, 0o640), (0o644, 0o640), (0o400, 0o400)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(before)).unwrap();
        add_user(&path, "carol", Some("pw"), None).unwrap();
        assert_eq!(mode(&path), after, "{before:o}");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["users.toml"], "no temporary file left behind");
    let snapshot = Users::open(&path).unwrap().current();
    assert_eq!(snapshot.len(), 3);
}

#[test]
fn an_unknown_user_costs_one_verification_against_a_dummy_hash() {
    let verified = std::cell::RefCell::new(Vec::new());
    let counting = |password: &str, hash: &str| {
        verified
            .borrow_mut()
            .push((password.to_owned(), hash.to_owned()));
        verify_password(password, hash)
    };
    assert!(!matches_with(None, "guess", counting));
    let calls = verified.borrow().clone();
    assert_eq!(calls.len(), 1, "one verification for an unknown user");
    assert_eq!(
        calls[0],
        ("guess".to_owned(), dummy_hash().unwrap().to_owned())
    );

    let real = hash_password("right").unwrap();
    assert!(matches_with(Some(&real), "right", counting));
    assert!(!matches_with(Some(&real), "wrong", counting));
    assert_eq!(verified.borrow().len(), 3, "one each for a known user");
    assert!(!password_matches(None, "right"));
}

#[test]
fn the_dummy_hash_has_the_parameters_of_real_ones() {
    let real = hash_password("x").unwrap();
    let (real, dummy) = (
        PasswordHash::new(&real).unwrap(),
        PasswordHash::new(dummy_hash().unwrap()).unwrap(),
    );
    assert_eq!(dummy.algorithm, real.algorithm);
    assert_eq!(dummy.version, real.version);
    assert_eq!(dummy.params, real.params);
    assert_eq!(dummy_hash(), dummy_hash(), "made once");
}

#[test]
fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = add_user(&dir.path().join("u.toml"), "Bad Name", Some("x"), None).unwrap_err();
    assert!(err.to_string().contains("invalid username"), "{err}");
}

#[test]
fn groups_are_added_kept_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    add_user_in_groups(&path, "alice", Some("pw"), None, &groups(&["cs101"])).unwrap();
    add_user_in_groups(&path, "alice", None, None, &groups(&["cs102", "cs101"])).unwrap();
    add_user(&path, "alice", Some("pw2"), None).unwrap();
    let file = read_file(&path).unwrap();
    assert_eq!(file.users["alice"].groups, ["cs101", "cs102"]);
    assert_eq!(
        Users::open(&path).unwrap().current()["alice"].groups,
        ["cs101", "cs102"]
    );
    let err = add_user_in_groups(&path, "bob", Some("pw"), None, &groups(&["CS 101"])).unwrap_err();
    assert!(err.to_string().contains("group \"CS 101\""), "{err}");
    assert!(
        !read_file(&path).unwrap().users.contains_key("bob"),
        "nothing written"
    );
    // A hand-edited bad group is left out, the rest of the account stays.
    std::fs::write(&path, "[users.carol]\ngroups = [\"ok\", \"Not OK\"]\n").unwrap();
    assert_eq!(
        Users::open(&path).unwrap().current()["carol"].groups,
        ["ok"]
    );
}

#[test]
fn ids_are_set_for_existing_users_and_never_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    add_user(&path, "alice", Some("pw"), None).unwrap();
    set_ids(&path, "alice", Some(20001), None).unwrap();
    set_ids(&path, "alice", None, Some(20000)).unwrap();
    let users = Users::open(&path).unwrap().current();
    let alice = users.get("alice").unwrap();
    assert_eq!((alice.uid, alice.gid), (Some(20001), Some(20000)));
    assert!(alice.password_hash.is_some(), "the password stays");
    let err = set_ids(&path, "alice", Some(0), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid 0 is root"), "{err}");
    let err = set_ids(&path, "bob", Some(20002), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"bob\" is not in"), "{err}");
}
