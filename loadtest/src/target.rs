//! `--target NAME=HOST:PORT[,user=U][,users=PREFIX:COUNT][,password=P|key=FILE]`.

use std::fmt;
use std::path::PathBuf;

/// One SSH server under test, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Label in tables, file names and `summary.json`.
    pub name: String,
    /// Host name or address, resolved once before the run.
    pub host: String,
    pub port: u16,
    /// Who logs in.
    pub users: Users,
    /// How they prove it.
    pub credential: Credential,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Users {
    /// Every client logs in as this user.
    Single(String),
    /// Client i logs in as PREFIX followed by (i mod COUNT)+1, zero-padded to
    /// three digits or more: `student001`, `student002`, …
    Numbered { prefix: String, count: u32 },
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Password(String),
    /// An unencrypted OpenSSH private key file.
    Key(PathBuf),
}

// The password must never reach logs or run files.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(<hidden>)"),
            Credential::Key(path) => f.debug_tuple("Key").field(path).finish(),
        }
    }
}

/// The most distinct numbered users a target may name; also keeps the
/// zero-padded names short.
const MAX_NUMBERED_USERS: u32 = 1_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetSpecError {
    /// The spec does not start with `NAME=HOST:PORT`.
    #[error("start with NAME=HOST:PORT, e.g. labssh=127.0.0.1:2222")]
    MissingName,
    /// The name is empty or has characters unfit for file names and CSV.
    #[error("name '{0}': use letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// The address part cannot be read as HOST:PORT.
    #[error("address '{0}': expected HOST:PORT, e.g. 127.0.0.1:22 or [::1]:22")]
    BadAddress(String),
    /// An option is not `key=value`.
    #[error("'{0}': options are key=value (user, users, password, key)")]
    NotKeyValue(String),
    /// An option other than user, users, password, key.
    #[error("unknown option '{0}' (known: user, users, password, key)")]
    UnknownOption(String),
    /// The same option appears twice.
    #[error("option '{0}' is given twice")]
    Duplicate(String),
    /// `users=` is not `PREFIX:COUNT` with a count of at least one.
    #[error("users='{0}': expected PREFIX:COUNT, e.g. users=student:300")]
    BadUsers(String),
    /// Both `user=` and `users=`.
    #[error("give user= or users=, not both")]
    UserAndUsers,
    /// Neither `user=` nor `users=`.
    #[error("say who logs in: user=NAME or users=PREFIX:COUNT")]
    NoUser,
    /// Both `password=` and `key=`.
    #[error("give password= or key=, not both")]
    PasswordAndKey,
    /// Neither `password=` nor `key=`.
    #[error("give a credential: password=SECRET or key=FILE")]
    NoCredential,
    /// An option with nothing after `=`.
    #[error("option '{0}' is empty")]
    Empty(String),
}

/// Parses one `--target` value.
pub fn parse(spec: &str) -> Result<Target, TargetSpecError> {
    let mut parts = spec.split(',');
    let head = parts.next().unwrap_or_default();
    let (name, address) = head.split_once('=').ok_or(TargetSpecError::MissingName)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(TargetSpecError::BadName(name.to_string()));
    }
    let (host, port) = parse_address(address)?;

    let mut user = None;
    let mut users = None;
    let mut password = None;
    let mut key = None;
    for option in parts {
        let (k, v) = option
            .split_once('=')
            .ok_or_else(|| TargetSpecError::NotKeyValue(option.to_string()))?;
        let slot = match k {
            "user" => &mut user,
            "users" => &mut users,
            "password" => &mut password,
            "key" => &mut key,
            _ => return Err(TargetSpecError::UnknownOption(k.to_string())),
        };
        if slot.is_some() {
            return Err(TargetSpecError::Duplicate(k.to_string()));
        }
        if v.is_empty() {
            return Err(TargetSpecError::Empty(k.to_string()));
        }
        *slot = Some(v.to_string());
    }

    let users = match (user, users) {
        (Some(_), Some(_)) => return Err(TargetSpecError::UserAndUsers),
        (None, None) => return Err(TargetSpecError::NoUser),
        (Some(user), None) => Users::Single(user),
        (None, Some(spec)) => parse_numbered(&spec)?,
    };
    let credential = match (password, key) {
        (Some(_), Some(_)) => return Err(TargetSpecError::PasswordAndKey),
        (None, None) => return Err(TargetSpecError::NoCredential),
        (Some(password), None) => Credential::Password(password),
        (None, Some(path)) => Credential::Key(PathBuf::from(path)),
    };
    Ok(Target {
        name: name.to_string(),
        host,
        port,
        users,
        credential,
    })
}

fn parse_address(address: &str) -> Result<(String, u16), TargetSpecError> {
    let bad = || TargetSpecError::BadAddress(address.to_string());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        // An unbracketed IPv6 address would be ambiguous.
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn parse_numbered(spec: &str) -> Result<Users, TargetSpecError> {
    let bad = || TargetSpecError::BadUsers(spec.to_string());
    let (prefix, count) = spec.rsplit_once(':').ok_or_else(bad)?;
    let count: u32 = count.parse().map_err(|_| bad())?;
    if prefix.is_empty() || count == 0 || count > MAX_NUMBERED_USERS {
        return Err(bad());
    }
    Ok(Users::Numbered {
        prefix: prefix.to_string(),
        count,
    })
}

impl Users {
    /// The login name of client `index` (0-based) within a level.
    pub fn for_client(&self, index: usize) -> String {
        match self {
            Users::Single(user) => user.clone(),
            Users::Numbered { prefix, count } => {
                let width = count.to_string().len().max(3);
                let number = index % (*count as usize) + 1;
                format!("{prefix}{number:0width$}")
            }
        }
    }

    /// How many different users `clients` clients log in as.
    pub fn distinct(&self, clients: usize) -> usize {
        match self {
            Users::Single(_) => clients.min(1),
            Users::Numbered { count, .. } => clients.min(*count as usize),
        }
    }
}

impl Target {
    /// `host:port`, bracketing IPv6 literals.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses() {
        let t = parse("labssh=127.0.0.1:2222,users=student:300,key=/tmp/id").unwrap();
        assert_eq!(t.name, "labssh");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 2222);
        assert_eq!(
            t.users,
            Users::Numbered {
                prefix: "student".into(),
                count: 300
            }
        );
        assert_eq!(t.credential, Credential::Key("/tmp/id".into()));
        assert_eq!(t.address(), "127.0.0.1:2222");
    }

    #[test]
    fn ipv6_and_names_parse() {
        let t = parse("v6=[::1]:22,user=root,password=pw").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.address(), "[::1]:22");
        let t = parse("dns=lab.example.edu:22,user=alice,password=a=b").unwrap();
        assert_eq!(t.host, "lab.example.edu");
        assert_eq!(t.credential, Credential::Password("a=b".into()));
    }

    #[test]
    fn numbered_users_wrap_and_pad() {
        let users = Users::Numbered {
            prefix: "student".into(),
            count: 3,
        };
        assert_eq!(users.for_client(0), "student001");
        assert_eq!(users.for_client(2), "student003");
        assert_eq!(users.for_client(3), "student001");
        assert_eq!(users.distinct(10), 3);
        let many = Users::Numbered {
            prefix: "s".into(),
            count: 1500,
        };
        assert_eq!(many.for_client(0), "s0001");
        assert_eq!(Users::Single("root".into()).for_client(7), "root");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        use TargetSpecError::*;
        let cases: &[(&str, TargetSpecError)] = &[
            ("127.0.0.1:22", MissingName),
            ("=127.0.0.1:22,user=a,password=b", BadName("".into())),
            ("a b=h:22,user=a,password=b", BadName("a b".into())),
            ("a=h,user=a,password=b", BadAddress("h".into())),
            ("a=h:0,user=a,password=b", BadAddress("h:0".into())),
            ("a=h:99999,user=a,password=b", BadAddress("h:99999".into())),
            ("a=::1:22,user=a,password=b", BadAddress("::1:22".into())),
            ("a=h:22,user", NotKeyValue("user".into())),
            ("a=h:22,port=1", UnknownOption("port".into())),
            ("a=h:22,user=a,user=b", Duplicate("user".into())),
            (
                "a=h:22,users=student,password=b",
                BadUsers("student".into()),
            ),
            (
                "a=h:22,users=student:0,password=b",
                BadUsers("student:0".into()),
            ),
            ("a=h:22,user=a,users=s:3,password=b", UserAndUsers),
            ("a=h:22,password=b", NoUser),
            ("a=h:22,user=a,password=b,key=k", PasswordAndKey),
            ("a=h:22,user=a", NoCredential),
            ("a=h:22,user=,password=b", Empty("user".into())),
        ];
        for (spec, want) in cases {
            assert_eq!(&parse(spec).unwrap_err(), want, "{spec}");
        }
        // The message names the problem and shows the right form.
        let message = parse("a=h:22,users=x").unwrap_err().to_string();
        assert!(message.contains("PREFIX:COUNT"), "{message}");
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let t = parse("a=h:22,user=u,password=hunter2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
