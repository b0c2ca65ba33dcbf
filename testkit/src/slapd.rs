//! A throwaway OpenLDAP `slapd` on loopback, with a small directory of
//! students, groups and a search account, for one test.
//!
//! Debian's slapd with its own `slapd.conf` in a temp dir (the schemas core,
//! cosine, nis and inetorgperson from /etc/ldap/schema, plus openssh-lpk,
//! which Debian does not ship, written here), loaded with `slapadd` before it
//! starts. It listens on `ldap://` (StartTLS offered) and `ldaps://` with a
//! certificate from a CA made for the test. It can be stopped and started
//! again on the same ports, the data kept, as a directory that goes down and
//! comes back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The directory's suffix.
pub const BASE_DN: &str = "dc=lab,dc=test";
/// Where the students are.
pub const PEOPLE_DN: &str = "ou=people,dc=lab,dc=test";
/// Where the posixGroups are.
pub const GROUPS_DN: &str = "ou=groups,dc=lab,dc=test";
/// The search account: the only one allowed to read entries besides their
/// owners (anonymous may only bind).
pub const READER_DN: &str = "cn=reader,dc=lab,dc=test";
/// Its password.
pub const READER_PW: &str = "reader-secret-pw";
/// carol: posixGroup cs101 (memberUid), memberOf staff, uid 20001, gid 20000.
pub const CAROL_PW: &str = "carol-correct-horse";
/// erin: in no group, uid 20003, gid 20000.
pub const ERIN_PW: &str = "erin-battery-staple";

/// How long slapd gets to come up or go down.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// openssh-lpk, as the openssh-ldap-publickey patches define it.
const OPENSSH_LPK_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
    DESC 'OpenSSH public key'
    EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY
    DESC 'OpenSSH LPK objectclass'
    MAY ( sshPublicKey $ uid ) )
";

/// A running slapd, stopped on drop.
pub struct Slapd {
    /// The server process, while it runs.
    child: Option<Child>,
    /// `ldap://` (and StartTLS) on 127.0.0.1.
    pub ldap_port: u16,
    /// `ldaps://` on 127.0.0.1.
    pub ldaps_port: u16,
    /// The CA that signed the server's certificate.
    pub ca_file: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail.
    pub other_ca_file: PathBuf,
    /// A file holding [`READER_PW`], for `bind_password_file`.
    pub reader_password_file: PathBuf,
    /// Config, database, certificates and log.
    dir: tempfile::TempDir,
}

/// An LDIF posixAccount under [`PEOPLE_DN`] (with `ldapPublicKey` for
/// `ssh_keys`, and `memberOf` values), for [`Slapd::start`]'s `extra_ldif`.
pub fn account_ldif(
    uid: &str,
    password: &str,
    uid_number: u32,
    gid_number: u32,
    member_of: &[&str],
    ssh_keys: &[&str],
) -> String {
    let mut ldif = format!(
        "dn: uid={uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
         objectClass: ldapPublicKey\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         uidNumber: {uid_number}\ngidNumber: {gid_number}\nhomeDirectory: /home/{uid}\n\
         userPassword: {password}\n"
    );
    for group in member_of {
        let _ = writeln!(ldif, "memberOf: {group}");
    }
    for key in ssh_keys {
        let _ = writeln!(ldif, "sshPublicKey: {key}");
    }
    ldif.push('\n');
    ldif
}

/// An LDIF posixGroup under [`GROUPS_DN`].
pub fn group_ldif(name: &str, gid_number: u32, members: &[&str]) -> String {
    let mut ldif = format!(
        "dn: cn={name},{GROUPS_DN}\nobjectClass: posixGroup\ncn: {name}\ngidNumber: {gid_number}\n"
    );
    for member in members {
        let _ = writeln!(ldif, "memberUid: {member}");
    }
    ldif.push('\n');
    ldif
}

/// The directory every test starts with: carol (cs101 by memberUid, staff
/// by memberOf), erin (no groups), the search account, groups cs101 and
/// cs102 (empty).
fn base_ldif() -> String {
    let mut ldif = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: lab\ndc: lab\n\n\
         dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS_DN}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: reader\nuserPassword: {READER_PW}\n\n"
    );
    ldif.push_str(&account_ldif(
        "carol",
        CAROL_PW,
        20001,
        20000,
        &[&format!("cn=staff,{GROUPS_DN}")],
        &[],
    ));
    ldif.push_str(&account_ldif("erin", ERIN_PW, 20003, 20000, &[], &[]));
    ldif.push_str(&group_ldif("cs101", 30001, &["carol"]));
    ldif.push_str(&group_ldif("cs102", 30002, &[]));
    ldif
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it,
/// plus an unrelated CA; PEM files in `dir`.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_params = |name: &str| -> anyhow::Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(params)
    };
    let ca_key = KeyPair::generate()?;
    let ca = ca_params("labssh test LDAP CA")?.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let other_key = KeyPair::generate()?;
    let other = ca_params("labssh test other CA")?.self_signed(&other_key)?;
    std::fs::write(dir.join("other-ca.pem"), other.pem())?;
    let issuer = Issuer::new(ca_params("labssh test LDAP CA")?, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    Ok(())
}

impl Slapd {
    /// Makes the directory ([`base_ldif`] plus `extra_ldif`), its
    /// certificates, and starts slapd; returns once it answers a search.
    pub fn start(extra_ldif: &str) -> anyhow::Result<Slapd> {
        let slapd = Path::new("/usr/sbin/slapd");
        anyhow::ensure!(
            slapd.exists(),
            "slapd is not installed (scripts/setup-host.sh installs Debian's slapd and ldap-utils)"
        );
        anyhow::ensure!(
            Path::new("/usr/bin/ldapsearch").exists(),
            "ldapsearch is not installed (scripts/setup-host.sh installs Debian's ldap-utils)"
        );
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::create_dir(d.join("db"))?;
        make_certificates(d)?;
        std::fs::write(d.join("openssh-lpk.schema"), OPENSSH_LPK_SCHEMA)?;
        std::fs::write(d.join("reader.pw"), format!("{READER_PW}\n"))?;
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {d}/openssh-lpk.schema\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload memberof\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\nsuffix \"{BASE_DN}\"\nrootdn \"cn=admin,{BASE_DN}\"\n\
             directory {d}/db\nmaxsize 10485760\n\
             overlay memberof\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by dn.exact=\"{READER_DN}\" read by self read by * none\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf)?;
        std::fs::write(d.join("data.ldif"), base_ldif() + extra_ldif)?;
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .context("slapadd")?;
        anyhow::ensure!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Slapd {
            child: None,
            // Outside the ephemeral range and never the same twice: a port from
            // bind(0) could be taken by any test's outgoing connection (or be both).
            ldap_port: crate::process::free_port(),
            ldaps_port: crate::process::free_port(),
            ca_file: d.join("ca.pem"),
            other_ca_file: d.join("other-ca.pem"),
            reader_password_file: d.join("reader.pw"),
            dir,
        };
        server.start_again()?;
        Ok(server)
    }

    /// `ldap://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:PORT`
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldaps://localhost:PORT` (the certificate names both).
    pub fn ldaps_url_by_name(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps_port)
    }

    /// Whether slapd is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts slapd (again) on the same ports with the same data, and waits
    /// until it answers.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "slapd is already running");
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("slapd.log"))?;
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
                self.ldap_port, self.ldaps_port
            ))
            // In the foreground (any -d), logging only what goes wrong.
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting slapd")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    anyhow::bail!("slapd exited with {status}: {}", self.log());
                }
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                anyhow::bail!(
                    "slapd did not answer within {START_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it answers a search of the root DSE on `ldap://`.
    fn answers(&self) -> bool {
        Command::new("ldapsearch")
            .args([
                "-x",
                "-H",
                &self.url(),
                "-b",
                "",
                "-s",
                "base",
                "-o",
                "nettimeout=2",
            ])
            .arg("namingContexts")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// What slapd wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    /// Stops slapd (SIGTERM, as an operator would; SIGKILL after 10 s) and
    /// waits until it has exited, so the ports are closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
