//! `labssh certs`: a small CA and one certificate per role, for mTLS
//! between proxy, controller and agents.
//!
//! Files (PEM) in DIR: `ca.pem`, `ca.key`, and `ROLE.pem` / `ROLE.key` for
//! controller, agent and proxy. Existing files are kept, so running it again
//! only fills in what is missing (e.g. after adding `--san` for a new node,
//! delete that role's pair first).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use labssh_proto::tls::{AGENT_NAME, CONTROLLER_NAME, PROXY_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Ten years: lab clusters are rebuilt long before; renewal is rerunning this.
const VALIDITY_DAYS: i64 = 3650;
const CA_NAME: &str = "labssh cluster CA";

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Where to write the certificates.
    #[arg(long, default_value = "labssh-dev/certs")]
    dir: PathBuf,
    /// Extra subject names (DNS names or IP addresses) for every certificate,
    /// e.g. the nodes' addresses.
    #[arg(long)]
    san: Vec<String>,
}

/// The roles and the name clients verify them by.
pub const ROLES: [(&str, &str); 3] = [
    ("controller", CONTROLLER_NAME),
    ("agent", AGENT_NAME),
    ("proxy", PROXY_NAME),
];

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    Ok(params)
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

fn write(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Creates whatever is missing in `dir`; returns the files of each role.
pub fn ensure(dir: &Path, extra_sans: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_keypair = match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)
            .with_context(|| format!("{}", ca_key.display()))?,
        (false, false) => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write(&ca_key, &key.serialize_pem(), true)?;
            write(&ca_pem, &cert.pem(), false)?;
            key
        }
        _ => bail!(
            "{}: ca.pem and ca.key must both exist or both be absent",
            dir.display()
        ),
    };
    let issuer = Issuer::new(ca_params()?, ca_keypair);
    for (role, name) in ROLES {
        let (cert_path, key_path) = (
            dir.join(format!("{role}.pem")),
            dir.join(format!("{role}.key")),
        );
        if cert_path.exists() && key_path.exists() {
            continue;
        }
        let mut sans = vec![
            name.to_string(),
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        sans.extend(extra_sans.iter().cloned());
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Every role is both a server and a client of another role.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let _ = std::fs::remove_file(&cert_path);
        let _ = std::fs::remove_file(&key_path);
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
    }
    Ok(())
}

/// The TLS files of `role` in `dir`.
pub fn files(dir: &Path, role: &str) -> labssh_proto::tls::TlsFiles {
    labssh_proto::tls::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}.key")),
    }
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    ensure(&args.dir, &args.san)?;
    println!("certificates in {}:", args.dir.display());
    for (role, _) in ROLES {
        println!(
            "  {role}: ca = {}, cert = {}, key = {}",
            args.dir.join("ca.pem").display(),
            args.dir.join(format!("{role}.pem")).display(),
            args.dir.join(format!("{role}.key")).display()
        );
    }
    println!("put them in each role's [tls] section; keep ca.key offline.");
    Ok(())
}
