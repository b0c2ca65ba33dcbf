//! mTLS between proxy, controller and agents: the whole path works with
//! certificates from `labssh certs`, and a client without a certificate from
//! the cluster CA cannot talk to an agent or the controller. (What each role
//! may call is tested in `tests/escape/roles.rs`.)

use crate::lab::{Lab, LabOptions};
use labssh_proto::pb;
use labssh_proto::roles::{server_name, Role};
use labssh_proto::tls::{TlsFiles, CONTROLLER_NAME};
use labssh_testkit::ssh::{stderr, stdout};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

async fn controller_call(url: String, tls: Option<ClientTlsConfig>) -> Result<usize, String> {
    let mut endpoint = Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = pb::controller_client::ControllerClient::new(channel);
    client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map(|r| r.into_inner().agents.len())
        .map_err(|s| s.to_string())
}

async fn agent_call(url: String, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let mut endpoint = Endpoint::from_shared(url).map_err(|e| e.to_string())?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    client
        .ensure(pb::EnsureRequest {
            user: "alice".into(),
            environment: "default".into(),
            prestart: false,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_require_certificates_from_the_cluster_ca() {
    let lab = Lab::start(LabOptions {
        tls: true,
        ..Default::default()
    })
    .await;
    // The whole path runs over mTLS.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo over-mtls"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "over-mtls\n", "{}", stderr(&out));

    let cluster = lab.cluster.as_ref().unwrap();
    let certs = lab.dir.path().join("certs");
    let files = |role: Role| labssh::certs::files(&certs, role, "local");
    let controller = format!("https://{}", cluster.controller_addr);
    let agent = format!("https://{}", cluster.agent_addrs[0]);
    let agent_name = server_name(Role::Agent, "agent0");
    let agent_name = agent_name.as_str();

    // With the right roles' certificates (an admin lists agents, a proxy
    // ensures a container): accepted.
    assert_eq!(
        controller_call(
            controller.clone(),
            Some(files(Role::Admin).client(CONTROLLER_NAME).unwrap())
        )
        .await,
        Ok(1)
    );
    let proxy_tls = files(Role::Proxy);
    agent_call(agent.clone(), Some(proxy_tls.client(agent_name).unwrap()))
        .await
        .unwrap();

    // Trusting the CA but presenting no certificate: refused.
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let anonymous = |name: &str| {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .domain_name(name)
    };
    assert!(
        controller_call(controller.clone(), Some(anonymous(CONTROLLER_NAME)))
            .await
            .is_err()
    );
    assert!(agent_call(agent.clone(), Some(anonymous(agent_name)))
        .await
        .is_err());

    // Plain HTTP/2 to a TLS port: refused.
    let plain = |url: &str| url.replacen("https://", "http://", 1);
    assert!(controller_call(plain(&controller), None).await.is_err());
    assert!(agent_call(plain(&agent), None).await.is_err());

    // A certificate from another CA: refused.
    let other = tempfile::tempdir().unwrap();
    labssh::certs::ensure(other.path(), "local", &[]).unwrap();
    let foreign = TlsFiles {
        ca: certs.join("ca.pem"),
        ..labssh::certs::files(other.path(), Role::Admin, "local")
    };
    let err = controller_call(
        controller.clone(),
        Some(foreign.client(CONTROLLER_NAME).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    assert!(
        agent_call(agent.clone(), Some(foreign.client(agent_name).unwrap()))
            .await
            .is_err()
    );

    // And logins still work afterwards.
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["echo fine"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "fine\n", "{}", stderr(&out));
    lab.stop().await;
}

fn labssh_certs(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .arg("certs")
        .args(args)
        .output()
        .unwrap()
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

#[test]
fn certs_command_is_idempotent_and_names_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let first = labssh_certs(&["--dir", d]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let ca_key = std::fs::read(dir.path().join("ca.key")).unwrap();
    assert_eq!(mode(&dir.path().join("ca.key")), 0o600, "ca.key is private");
    let second = labssh_certs(&["--dir", d]);
    assert!(second.status.success());
    assert_eq!(
        std::fs::read(dir.path().join("ca.pem")).unwrap(),
        ca,
        "CA kept"
    );
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), ca_key);
    for role in Role::ALL {
        assert!(String::from_utf8_lossy(&first.stdout).contains(role.as_str()));
        let files = labssh::certs::files(dir.path(), role, "local");
        assert_eq!(mode(&files.key), 0o600, "{role} key is private");
    }
    assert!(String::from_utf8_lossy(&second.stdout).contains("kept"));
}

/// One more certificate for a named node and role, from the same CA, naming
/// its role and node in a way servers read.
#[test]
fn certs_command_issues_one_certificate_per_node_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = labssh_certs(&[
        "--dir", d, "--role", "agent", "--name", "node7", "--san", "10.0.0.7",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("node7.agent.labssh"), "{text}");
    let files = labssh::certs::files(dir.path(), Role::Agent, "node7");
    assert_eq!(mode(&files.key), 0o600);
    let pem = std::fs::read_to_string(&files.cert).unwrap();
    let der = pem_body(&pem);
    assert_eq!(
        labssh_proto::roles::Peer::from_certificate(&der).unwrap(),
        labssh_proto::roles::Peer {
            role: Role::Agent,
            name: "node7".into()
        }
    );
    // Only that one: no other role was issued.
    assert!(!labssh::certs::files(dir.path(), Role::Proxy, "local")
        .cert
        .exists());

    // Bad input gets a clear error and writes nothing.
    for (args, needle) in [
        (vec!["--role", "root", "--name", "x"], "not a role"),
        (vec!["--role", "agent"], "--name"),
        (vec!["--role", "agent", "--name", "a..b"], "--name"),
        (
            vec!["--role", "agent", "--name", "Node7"],
            "differs only in case",
        ),
        (
            vec![
                "--role",
                "agent",
                "--name",
                "node8",
                "--san",
                "node1.agent.labssh",
            ],
            "reserved",
        ),
        (
            vec![
                "--role",
                "agent",
                "--name",
                "node8",
                "--san",
                "labssh-controller",
            ],
            "reserved",
        ),
    ] {
        let mut all = vec!["--dir", d];
        all.extend(args.iter().copied());
        let out = labssh_certs(&all);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!labssh::certs::files(dir.path(), Role::Agent, "node8")
        .cert
        .exists());
}

/// The DER inside a one-certificate PEM.
fn pem_body(pem: &str) -> Vec<u8> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}
