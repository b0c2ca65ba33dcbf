//! mTLS between proxy, controller and agents: the whole path works with
//! certificates from `labssh certs`, and a client without a certificate from
//! the cluster CA cannot talk to an agent or the controller.

mod lab;

use lab::{Lab, LabOptions};
use labssh_proto::pb;
use labssh_proto::tls::{TlsFiles, AGENT_NAME, CONTROLLER_NAME};
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
    let files = |role: &str| TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{role}.pem")),
        key: certs.join(format!("{role}.key")),
    };
    let controller = format!("https://{}", cluster.controller_addr);
    let agent = format!("https://{}", cluster.agent_addrs[0]);

    // With the proxy's certificate: accepted.
    let proxy_tls = files("proxy");
    assert_eq!(
        controller_call(
            controller.clone(),
            Some(proxy_tls.client(CONTROLLER_NAME).unwrap())
        )
        .await,
        Ok(1)
    );
    agent_call(agent.clone(), Some(proxy_tls.client(AGENT_NAME).unwrap()))
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
    assert!(agent_call(agent.clone(), Some(anonymous(AGENT_NAME)))
        .await
        .is_err());

    // Plain HTTP/2 to a TLS port: refused.
    let plain = |url: &str| url.replacen("https://", "http://", 1);
    assert!(controller_call(plain(&controller), None).await.is_err());
    assert!(agent_call(plain(&agent), None).await.is_err());

    // A certificate from another CA: refused.
    let other = tempfile::tempdir().unwrap();
    labssh::certs::ensure(other.path(), &[]).unwrap();
    let foreign = TlsFiles {
        ca: certs.join("ca.pem"),
        cert: other.path().join("proxy.pem"),
        key: other.path().join("proxy.key"),
    };
    let err = controller_call(
        controller.clone(),
        Some(foreign.client(CONTROLLER_NAME).unwrap()),
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    assert!(
        agent_call(agent.clone(), Some(foreign.client(AGENT_NAME).unwrap()))
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

#[test]
fn certs_command_is_idempotent_and_names_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args(["certs", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let second = run();
    assert!(second.status.success());
    assert_eq!(
        std::fs::read(dir.path().join("ca.pem")).unwrap(),
        ca,
        "CA kept"
    );
    for role in ["controller", "agent", "proxy"] {
        assert!(String::from_utf8_lossy(&first.stdout).contains(role));
        let key = dir.path().join(format!("{role}.key"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{role}.key is private");
    }
}
