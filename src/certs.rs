//! `labssh certs`: the cluster CA, and one certificate per node and per role
//! for mTLS between proxies, controller, agents and operators.
//!
//! Files (PEM) in DIR: `ca.pem` and `ca.key` (made once, never overwritten;
//! the key stays on the machine that issues certificates), and for each
//! certificate `ROLE-NAME.pem` / `ROLE-NAME.key` (0600), e.g.
//! `agent-node7.pem`. A certificate names its role and holder in a URI
//! (`spiffe://labssh/agent/node7`) that servers check on every call, and
//! carries the DNS name clients verify it by as a server (see
//! [`labssh_proto::roles::server_name`]). Existing files are kept, so running
//! it again only fills in what is missing; to reissue one (e.g. with a new
//! `--san`), delete its pair first.
//!
//! `labssh certs --dir DIR` issues a certificate of every role named `local`
//! (one box running everything, as `labssh up` does);
//! `labssh certs --dir DIR --role agent --name node7 --san 10.0.0.7` one more.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use labssh_proto::roles::{self, Role};
use labssh_proto::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Ten years: lab clusters are rebuilt long before; renewal is rerunning this.
const VALIDITY_DAYS: i64 = 3650;
const CA_NAME: &str = "labssh cluster CA";
/// The holder's name when none is given: one box running every role, which is
/// also what `labssh up` calls its agent.
pub const DEFAULT_NAME: &str = "local";

#[derive(clap::Args)]
pub struct CertsArgs {
    /// Where the CA and the certificates are.
    #[arg(long, default_value = "labssh-dev/certs")]
    dir: PathBuf,
    /// Issue one certificate of this role: proxy, agent, controller or admin
    /// (default: one of every role).
    #[arg(long, value_parser = parse_role, requires = "name")]
    role: Option<Role>,
    /// The node, replica or operator the certificate is for; an agent's must
    /// be its `name` in agent.toml (default: local).
    #[arg(long)]
    name: Option<String>,
    /// Extra subject names (DNS names or IP addresses) for the certificate(s),
    /// e.g. the node's address.
    #[arg(long)]
    san: Vec<String>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

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

/// The cluster CA in `dir`, made there if neither of its files exists.
fn ca(dir: &Path) -> anyhow::Result<(Issuer<'static, KeyPair>, bool)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (keypair, created) = match (ca_pem.exists(), ca_key.exists()) {
        (true, true) => (
            KeyPair::from_pem(&std::fs::read_to_string(&ca_key)?)
                .with_context(|| format!("{}", ca_key.display()))?,
            false,
        ),
        (false, false) => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write(&ca_key, &key.serialize_pem(), true)?;
            write(&ca_pem, &cert.pem(), false)?;
            (key, true)
        }
        _ => bail!(
            "{}: ca.pem and ca.key must both exist or both be absent",
            dir.display()
        ),
    };
    Ok((Issuer::new(ca_params()?, keypair), created))
}

/// The TLS files of `role`'s certificate for `name` in `dir`.
pub fn files(dir: &Path, role: Role, name: &str) -> TlsFiles {
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{role}-{name}.pem")),
        key: dir.join(format!("{role}-{name}.key")),
    }
}

/// Names `--san` may not take: they are how clients tell the roles apart, so
/// only `labssh certs` itself puts them in a certificate.
fn check_san(san: &str) -> anyhow::Result<()> {
    let lower = san.to_ascii_lowercase();
    if lower == labssh_proto::tls::CONTROLLER_NAME
        || lower.ends_with(&format!(".{}", roles::DNS_SUFFIX))
        || lower == roles::DNS_SUFFIX
        || lower.contains('*')
    {
        bail!(
            "--san {san:?}: {} and names ending in .{} are reserved for the names labssh gives \
             each role, and wildcards are not allowed",
            labssh_proto::tls::CONTROLLER_NAME,
            roles::DNS_SUFFIX
        );
    }
    Ok(())
}

/// The certificates of `role` already in `dir`, by holder name.
fn issued(dir: &Path, role: Role) -> Vec<String> {
    let prefix = format!("{role}-");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            Some(
                file.strip_prefix(&prefix)?
                    .strip_suffix(".pem")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    names
}

/// What [`issue`] did.
pub struct Issued {
    /// The certificate's files.
    pub files: TlsFiles,
    /// False when the pair was already there and was kept.
    pub created: bool,
}

/// Issues `role`'s certificate for `name` in `dir` from the CA there (made
/// first if `dir` has none), unless it exists.
pub fn issue(dir: &Path, role: Role, name: &str, extra_sans: &[String]) -> anyhow::Result<Issued> {
    let (issuer, _) = ca(dir)?;
    issue_with(dir, &issuer, role, name, extra_sans)
}

fn issue_with(
    dir: &Path,
    issuer: &Issuer<'static, KeyPair>,
    role: Role,
    name: &str,
    extra_sans: &[String],
) -> anyhow::Result<Issued> {
    roles::check_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    for san in extra_sans {
        check_san(san)?;
    }
    let files = files(dir, role, name);
    if files.cert.exists() && files.key.exists() {
        return Ok(Issued {
            files,
            created: false,
        });
    }
    // DNS names compare without case: `Node1`'s certificate would pass for
    // `node1`, so the two may not both exist.
    if let Some(other) = issued(dir, role)
        .into_iter()
        .find(|n| n != name && n.eq_ignore_ascii_case(name))
    {
        bail!("--name {name:?}: {dir} already has a {role} certificate for {other:?}, which differs only in case", dir = dir.display());
    }
    let server_name = roles::server_name(role, name);
    let mut sans = vec![server_name.clone()];
    sans.extend(extra_sans.iter().cloned());
    let mut params = CertificateParams::new(sans)?;
    params.subject_alt_names.push(SanType::URI(
        roles::uri(role, name)
            .try_into()
            .context("the certificate's URI")?,
    ));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, server_name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // A certificate is good only for the sides of TLS its role takes: a proxy's
    // or an admin's cannot pose as a server.
    params.extended_key_usages = [
        (role.serves(), ExtendedKeyUsagePurpose::ServerAuth),
        (role.dials(), ExtendedKeyUsagePurpose::ClientAuth),
    ]
    .into_iter()
    .filter_map(|(yes, usage)| yes.then_some(usage))
    .collect();
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let _ = std::fs::remove_file(&files.cert);
    let _ = std::fs::remove_file(&files.key);
    write(&files.key, &key.serialize_pem(), true)?;
    write(&files.cert, &cert.pem(), false)?;
    Ok(Issued {
        files,
        created: true,
    })
}

/// Makes whatever is missing in `dir` for one box named `name` running every
/// role: the CA and a certificate of each role.
pub fn ensure(dir: &Path, name: &str, extra_sans: &[String]) -> anyhow::Result<Vec<Issued>> {
    let (issuer, _) = ca(dir)?;
    Role::ALL
        .iter()
        .map(|role| issue_with(dir, &issuer, *role, name, extra_sans))
        .collect()
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let (issuer, new_ca) = ca(&args.dir)?;
    if new_ca {
        println!(
            "new cluster CA: {} (keep {} on this machine only)",
            args.dir.join("ca.pem").display(),
            args.dir.join("ca.key").display()
        );
    }
    let name = args.name.as_deref().unwrap_or(DEFAULT_NAME);
    let roles = match args.role {
        Some(role) => vec![role],
        None => Role::ALL.to_vec(),
    };
    for role in roles {
        let issued = issue_with(&args.dir, &issuer, role, name, &args.san)?;
        let files = &issued.files;
        println!(
            "{role} {name:?}: {} {}",
            files.cert.display(),
            if issued.created {
                "issued"
            } else {
                "exists, kept (delete it and its key to reissue)"
            }
        );
        println!(
            "  [tls] ca = {:?}, cert = {:?}, key = {:?}",
            files.ca, files.cert, files.key
        );
        match role {
            Role::Agent => println!(
                "  for the agent with name = {name:?}; proxies verify it as {}",
                roles::server_name(role, name)
            ),
            Role::Admin => println!(
                "  for `labssh agent drain|resume --tls-dir {} --tls-name {name}`",
                args.dir.display()
            ),
            Role::Proxy | Role::Controller => {}
        }
    }
    println!("copy ca.pem and a node's own pair to that node only; keep ca.key off the nodes.");
    Ok(())
}
