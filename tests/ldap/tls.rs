//! ldaps:// and StartTLS with the CA the test made; another CA refused.

use labssh_testkit::slapd::{Slapd, CAROL_PW};
use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{Lab, LabOptions};

/// A lab whose directory is `server` at `url`, trusting `ca`.
async fn lab(server: &Slapd, url: String, starttls: bool, ca: &std::path::Path) -> Lab {
    let mut auth = crate::auth(server, url);
    if let Some(ldap) = auth.ldap.as_mut() {
        ldap.starttls = starttls;
        ldap.ca_file = Some(ca.to_path_buf());
    }
    Lab::start(LabOptions {
        proxy_auth: Some(auth),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ldaps_and_starttls_verify_the_directory_by_its_ca() {
    let server = Slapd::start("").expect("slapd");
    for (url, starttls) in [(server.ldaps_url(), false), (server.url(), true)] {
        let lab = lab(&server, url.clone(), starttls, &server.ca_file).await;
        let out = lab
            .ssh
            .run("carol", &Auth::Password(CAROL_PW.into()), &["echo tls"])
            .await
            .unwrap();
        assert_eq!(
            stdout(&out),
            "tls\n",
            "{url} starttls={starttls}: {}",
            stderr(&out)
        );
        lab.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_whose_certificate_another_ca_signed_is_not_asked() {
    let server = Slapd::start("").expect("slapd");
    let lab = lab(&server, server.ldaps_url(), false, &server.other_ca_file).await;
    // The password never reaches a server the proxy cannot verify: the
    // student reads that the service is unavailable (and the log says why).
    let out = lab
        .ssh
        .command_with(
            "carol",
            &Auth::KeyboardInteractive(CAROL_PW.into()),
            &["-o", "LogLevel=INFO"],
            &["true"],
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains(crate::UNAVAILABLE),
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}
