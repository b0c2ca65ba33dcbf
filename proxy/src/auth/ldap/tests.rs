//! The authenticator against a real slapd (labssh-testkit's): what it
//! answers for good and bad passwords, keys, unknown and crafted names, a
//! directory that is down, hangs or comes back, and over TLS.

use std::time::{Duration, Instant};

use labssh_proto::duration::ConfigDuration;
use labssh_testkit::slapd::{self, Slapd, CAROL_PW, ERIN_PW};

use super::*;

/// A check's bound in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Slack past `TIMEOUT` for a busy machine: what "does not hang" allows.
const SLACK: Duration = Duration::from_secs(5);

fn config(url: String, server: &Slapd) -> LdapConfig {
    LdapConfig {
        url,
        bind_dn: slapd::READER_DN.into(),
        bind_password_file: Some(server.reader_password_file.clone()),
        base_dn: slapd::BASE_DN.into(),
        group_base_dn: slapd::GROUPS_DN.into(),
        timeout: ConfigDuration(TIMEOUT),
        ..LdapConfig::default()
    }
}

fn request(user: &str) -> Request<'_> {
    Request {
        user,
        environment: None,
        method: "password",
        client: "192.0.2.1:50000",
    }
}

fn key(line: &str) -> PublicKey {
    crate::users::parse_authorized_key(line).unwrap()
}

const DAVE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V dave@laptop";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl other";

/// slapd with dave (a key, cs102 by memberOf), two entries both called
/// `twin`, which a filter must never pick from, and `zero`, whose uidNumber
/// and gidNumber are 0.
fn directory() -> Slapd {
    let extra = slapd::account_ldif(
        "dave",
        "dave-pw",
        20002,
        20000,
        &[&format!("cn=cs102,{}", slapd::GROUPS_DN)],
        &[DAVE_KEY],
    );
    let twins = format!(
        "dn: cn=twin1,{p}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: twin\ncn: twin1\nsn: t\nuidNumber: 20010\ngidNumber: 20000\nhomeDirectory: /h\nuserPassword: twin-pw\n\n\
         dn: cn=twin2,{p}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nuid: twin\ncn: twin2\nsn: t\nuidNumber: 20011\ngidNumber: 20000\nhomeDirectory: /h\nuserPassword: twin-pw\n\n",
        p = slapd::PEOPLE_DN
    );
    let zero = slapd::account_ldif("zero", "zero-pw", 0, 0, &[], &[]);
    Slapd::start(&(extra + &twins + &zero)).expect("slapd")
}

fn carol() -> Identity {
    Identity {
        source: "ldap".into(),
        // memberOf first, then the posixGroup search.
        groups: vec!["staff".into(), "cs101".into()],
        uid: Some(20001),
        gid: Some(20000),
        ..Identity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_keys_and_lookups_answer_from_the_directory() {
    let server = directory();
    let ldap = Ldap::new(&config(server.url(), &server)).unwrap();
    assert_eq!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(carol())
    );
    assert_eq!(
        ldap.lookup(&request("carol")).await,
        Answer::Accept(carol())
    );
    assert!(matches!(
        ldap.password(&request("carol"), "wrong").await,
        Answer::Reject(why) if why == "wrong password"
    ));
    // An empty password is refused without a bind (which would be an
    // unauthenticated, i.e. anonymous, one).
    assert!(matches!(
        ldap.password(&request("carol"), "").await,
        Answer::Reject(why) if why.contains("empty password")
    ));
    assert_eq!(
        ldap.password(&request("mallory"), "x").await,
        Answer::Unknown
    );
    assert_eq!(ldap.lookup(&request("mallory")).await, Answer::Unknown);
    // erin is in no group.
    let Answer::Accept(erin) = ldap.password(&request("erin"), ERIN_PW).await else {
        panic!("erin refused");
    };
    assert!(erin.groups.is_empty(), "{erin:?}");
    assert_eq!((erin.uid, erin.gid), (Some(20003), Some(20000)));
    // Keys: dave's matches; another key does not; carol has none.
    let Answer::Accept(dave) = ldap.key(&request("dave"), &key(DAVE_KEY)).await else {
        panic!("dave's key refused");
    };
    assert_eq!(dave.groups, ["cs102"]);
    assert_eq!(dave.uid, Some(20002));
    assert!(matches!(
        ldap.key(&request("dave"), &key(OTHER_KEY)).await,
        Answer::Reject(_)
    ));
    assert_eq!(
        ldap.key(&request("carol"), &key(DAVE_KEY)).await,
        Answer::Unknown
    );
    // uid and gid 0 are never taken from the directory.
    let Answer::Accept(zero) = ldap.password(&request("zero"), "zero-pw").await else {
        panic!("zero refused");
    };
    assert_eq!((zero.uid, zero.gid), (None, None));
    // Two entries for one name: neither.
    assert!(matches!(
        ldap.password(&request("twin"), "twin-pw").await,
        Answer::Reject(why) if why.contains("more than one entry")
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_names_find_nobody() {
    let server = directory();
    let ldap = Ldap::new(&config(server.url(), &server)).unwrap();
    // Unescaped in the default filter, this one finds every account: the
    // injection is real against this directory.
    let raw = std::process::Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &server.url(),
            "-D",
            slapd::READER_DN,
            "-w",
            slapd::READER_PW,
        ])
        .args([
            "-b",
            slapd::BASE_DN,
            "(&(objectClass=posixAccount)(uid=*)(uid=*))",
            "dn",
        ])
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&raw.stdout).matches("dn: ").count();
    assert!(found >= 3, "the unescaped filter finds {found}");
    for crafted in [
        "*)(uid=*",
        "*",
        "carol)(uid=*",
        "carol*",
        "*)(|(uid=carol",
        "carol\\",
        "carol\0",
    ] {
        for password in [CAROL_PW, "x"] {
            assert_eq!(
                ldap.password(&request(crafted), password).await,
                Answer::Unknown,
                "{crafted:?}"
            );
        }
        assert_eq!(
            ldap.lookup(&request(crafted)).await,
            Answer::Unknown,
            "{crafted:?}"
        );
        assert_eq!(
            ldap.key(&request(crafted), &key(DAVE_KEY)).await,
            Answer::Unknown,
            "{crafted:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_serve_many_checks_as_the_search_account() {
    let server = directory();
    let mut cfg = config(server.url(), &server);
    cfg.pool_size = 2;
    let ldap = Ldap::new(&cfg).unwrap();
    // After carol's bind the connection is carol's, who may read only her
    // own entry: erin is found only if it is bound back as the reader.
    assert!(matches!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(_)
    ));
    assert!(matches!(
        ldap.lookup(&request("erin")).await,
        Answer::Accept(_)
    ));
    // Many at once through two connections: each gets its own answer.
    let checks = (0..24).map(|i| {
        let ldap = &ldap;
        async move {
            match i % 3 {
                0 => (i, ldap.password(&request("carol"), CAROL_PW).await),
                1 => (i, ldap.password(&request("erin"), "wrong").await),
                _ => (i, ldap.lookup(&request("dave")).await),
            }
        }
    });
    for (i, answer) in futures::future::join_all(checks).await {
        match i % 3 {
            0 => assert_eq!(answer, Answer::Accept(carol()), "{i}"),
            1 => assert!(matches!(answer, Answer::Reject(_)), "{i}: {answer:?}"),
            _ => assert!(
                matches!(answer, Answer::Accept(ref id) if id.uid == Some(20002)),
                "{i}: {answer:?}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_down_or_hanging_is_unavailable_within_the_timeout() {
    let mut server = directory();
    let ldap = Ldap::new(&config(server.url(), &server)).unwrap();
    assert_eq!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(carol())
    );

    // Stopped: refused connections, at once.
    server.stop();
    let started = Instant::now();
    let answer = ldap.password(&request("carol"), CAROL_PW).await;
    assert!(matches!(answer, Answer::Unavailable(_)), "{answer:?}");
    assert!(
        started.elapsed() < TIMEOUT + SLACK,
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        ldap.key(&request("dave"), &key(DAVE_KEY)).await,
        Answer::Unavailable(_)
    ));
    assert!(matches!(
        ldap.lookup(&request("carol")).await,
        Answer::Unavailable(_)
    ));

    // Back: the next check works (the pooled connection died with it).
    server.start_again().unwrap();
    assert_eq!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(carol())
    );

    // A server that accepts the connection and never answers: the check
    // gives up at the timeout instead of hanging.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let ldap = Ldap::new(&config(url, &server)).unwrap();
    let started = Instant::now();
    let answer = ldap.password(&request("carol"), CAROL_PW).await;
    let took = started.elapsed();
    assert!(
        matches!(&answer, Answer::Unavailable(why) if why.contains("no answer within")),
        "{answer:?}"
    );
    assert!(took >= TIMEOUT && took < TIMEOUT + SLACK, "{took:?}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_works_and_with_another_is_refused() {
    let server = directory();
    let tls = |url: String, starttls: bool, ca: &std::path::Path| {
        let mut cfg = config(url, &server);
        cfg.starttls = starttls;
        cfg.ca_file = Some(ca.to_path_buf());
        Ldap::new(&cfg).unwrap()
    };
    for (url, starttls) in [
        (server.ldaps_url(), false),
        (server.ldaps_url_by_name(), false),
        (server.url(), true),
    ] {
        let ldap = tls(url.clone(), starttls, &server.ca_file);
        assert_eq!(
            ldap.password(&request("carol"), CAROL_PW).await,
            Answer::Accept(carol()),
            "{url} starttls={starttls}"
        );
        let ldap = tls(url.clone(), starttls, &server.other_ca_file);
        let answer = ldap.password(&request("carol"), CAROL_PW).await;
        assert!(
            matches!(&answer, Answer::Unavailable(why) if why.contains("certificate") || why.contains("UnknownIssuer")),
            "{url} starttls={starttls}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_search_account_is_unavailable_not_a_wrong_password() {
    let server = directory();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("pw");
    std::fs::write(&wrong, "not-the-readers\n").unwrap();
    let mut cfg = config(server.url(), &server);
    cfg.bind_password_file = Some(wrong.clone());
    let ldap = Ldap::new(&cfg).unwrap();
    let answer = ldap.password(&request("carol"), CAROL_PW).await;
    assert!(
        matches!(&answer, Answer::Unavailable(why) if why.contains("bind_dn")),
        "{answer:?}"
    );
    // The operator fixes (rotates) the password file, replacing it as
    // editors do: the next check reads it, no restart.
    let fixed = dir.path().join("pw.new");
    std::fs::write(&fixed, format!("{}\n", slapd::READER_PW)).unwrap();
    std::fs::rename(&fixed, &wrong).unwrap();
    assert_eq!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(carol())
    );
    // A file gone (or unreadable) later keeps the last password read.
    std::fs::remove_file(&wrong).unwrap();
    assert_eq!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Accept(carol())
    );
    // A base DN that does not exist: the directory says so, unavailable too.
    let mut cfg = config(server.url(), &server);
    cfg.base_dn = "ou=nowhere,dc=lab,dc=test".into();
    let ldap = Ldap::new(&cfg).unwrap();
    assert!(matches!(
        ldap.password(&request("carol"), CAROL_PW).await,
        Answer::Unavailable(_)
    ));
    // new() refuses what problems() finds.
    let mut cfg = config(server.url(), &server);
    cfg.pool_size = 0;
    let err = Ldap::new(&cfg).err().unwrap().to_string();
    assert!(err.contains("auth.ldap.pool_size"), "{err}");
}
