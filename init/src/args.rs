//! The command line the agent gives labssh-init as the container's entrypoint.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::creds;

/// Where the agent mounts the shared directory, and so the socket's usual path.
const DEFAULT_SOCKET: &str = "/.labssh/run/helper.sock";

pub const USAGE: &str = "\
usage: labssh-init [--socket PATH] [--user USER[:GROUP]] [--drop-caps N,N,...]
                   [--account NAME:UID:GID:HOME:SHELL] [--] [COMMAND [ARG]...]
       labssh-init --install DIR
       labssh-init --xauth DISPLAY PROTOCOL COOKIE -- COMMAND [ARG]...

PID 1 of a labssh container: reaps orphans, forwards signals to COMMAND (the image's
entrypoint and cmd) and exits with it; without COMMAND it runs until stopped. Serves
the agent on a unix socket (only peers outside the container's PID namespace).

  --socket PATH      socket to listen on (default /.labssh/run/helper.sock)
  --user SPEC        run COMMAND as this user, as the image's USER would
  --drop-caps LIST   capability numbers every child loses (the helper's own)
  --account ENTRY    add this user (and a group of its gid) to /etc/passwd and
                     /etc/group unless the image has them: a pod's student
  --install DIR      copy this executable and the labssh-sftp beside it into DIR
                     (as init and sftp-server) and exit: a pod's init container
  --xauth D P C      install the X11 cookie C (hex) of protocol P for display D
                     (N.S) with xauth, or in ~/.Xauthority without one, then run
                     COMMAND: an ssh -X session, as the student";

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The unix socket to listen on.
    pub socket: PathBuf,
    /// The image's USER for the main command; empty is root.
    pub user: String,
    /// Capabilities the helper holds only for itself, taken from every child.
    pub drop_caps: Vec<u32>,
    /// The student to add to /etc/passwd and /etc/group (`--account`).
    pub account: Option<crate::account::Account>,
    /// The main command; empty means none.
    pub command: Vec<OsString>,
}

/// What the command line asks for.
pub enum Parsed {
    /// Run.
    Run(Options),
    /// Print this and exit 0 (`--help`, `--version`).
    Print(String),
    /// Copy the helper into this directory and exit (`--install DIR`).
    Install(PathBuf),
    /// Install an X11 cookie, then become the command (`--xauth`).
    Xauth(crate::xauth::Request),
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut opts = Options {
        socket: PathBuf::from(DEFAULT_SOCKET),
        user: String::new(),
        drop_caps: Vec::new(),
        account: None,
        command: Vec::new(),
    };
    let mut args = args.into_iter();
    let mut first = true;
    while let Some(arg) = args.next() {
        let alone = std::mem::replace(&mut first, false);
        let text = arg.to_string_lossy();
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value"))
                .map(|v| v.to_string_lossy().into_owned())
        };
        match text.as_ref() {
            "--install" if alone => {
                let dir = PathBuf::from(value("--install")?);
                return match args.next() {
                    None => Ok(Parsed::Install(dir)),
                    Some(extra) => Err(format!(
                        "--install DIR takes nothing else (got {})",
                        extra.to_string_lossy()
                    )),
                };
            }
            "--install" => return Err("--install DIR takes nothing else".to_owned()),
            "--xauth" if alone => {
                let display = value("--xauth")?;
                let protocol = value("--xauth")?;
                let cookie = value("--xauth")?;
                if args.next().is_none_or(|sep| sep != "--") {
                    return Err("--xauth DISPLAY PROTOCOL COOKIE needs -- COMMAND".to_owned());
                }
                return Ok(Parsed::Xauth(crate::xauth::Request {
                    display,
                    protocol,
                    cookie,
                    command: args.collect(),
                }));
            }
            "--socket" => opts.socket = PathBuf::from(value("--socket")?),
            "--user" => opts.user = value("--user")?,
            "--drop-caps" => opts.drop_caps = creds::parse_caps(&value("--drop-caps")?)?,
            "--account" => {
                opts.account = Some(crate::account::Account::parse(&value("--account")?)?)
            }
            "--help" | "-h" => return Ok(Parsed::Print(USAGE.to_owned())),
            "--version" => {
                return Ok(Parsed::Print(format!(
                    "labssh-init {} (protocol {})",
                    env!("CARGO_PKG_VERSION"),
                    labssh_helper_proto::wire::VERSION
                )))
            }
            "--" => {
                opts.command.extend(args);
                break;
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            _ => {
                opts.command.push(arg);
                opts.command.extend(args);
                break;
            }
        }
    }
    Ok(Parsed::Run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from))? {
            Parsed::Run(o) => Ok(o),
            Parsed::Print(p) => Err(p),
            Parsed::Install(dir) => Err(format!("install {}", dir.display())),
            Parsed::Xauth(request) => Err(format!("xauth {}", request.display)),
        }
    }

    #[test]
    fn xauth_takes_three_values_then_the_command() {
        let parsed = parse(
            [
                "--xauth",
                "10.0",
                "MIT-MAGIC-COOKIE-1",
                "abcd",
                "--",
                "sh",
                "-l",
            ]
            .map(OsString::from),
        )
        .unwrap();
        let Parsed::Xauth(request) = parsed else {
            panic!("not --xauth")
        };
        assert_eq!(request.display, "10.0");
        assert_eq!(request.cookie, "abcd");
        assert_eq!(
            request.command,
            vec![OsString::from("sh"), OsString::from("-l")]
        );
        assert!(parse(["--xauth", "10.0", "P", "abcd", "sh"].map(OsString::from)).is_err());
        assert!(parse(["--xauth", "10.0"].map(OsString::from)).is_err());
    }

    #[test]
    fn options_then_command() {
        let o = run(&[
            "--socket",
            "/s",
            "--user",
            "www",
            "--drop-caps",
            "6,7",
            "--",
            "-x",
            "y",
        ])
        .unwrap();
        assert_eq!(o.socket, PathBuf::from("/s"));
        assert_eq!(o.user, "www");
        assert_eq!(o.drop_caps, vec![6, 7]);
        assert_eq!(o.command, vec![OsString::from("-x"), OsString::from("y")]);
        let o = run(&["httpd", "-f"]).unwrap();
        assert_eq!(o.command.len(), 2);
        assert_eq!(o.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(run(&[]).unwrap().command.is_empty());
        let o = run(&[
            "--account",
            "alice:1000:1000:/home/alice:/bin/sh",
            "--",
            "sleep",
        ])
        .unwrap();
        assert_eq!(o.account.unwrap().name, "alice");
        assert!(run(&["--account", "alice"])
            .unwrap_err()
            .contains("--account"));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(run(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(run(&["--user"]).unwrap_err().contains("--user"));
        assert!(run(&["--version"]).unwrap_err().contains("labssh-init"));
    }

    #[test]
    fn install_stands_alone() {
        let parsed = parse(["--install", "/.labssh"].map(OsString::from)).unwrap();
        assert!(matches!(parsed, Parsed::Install(dir) if dir == Path::new("/.labssh")));
        assert!(run(&["--install"]).unwrap_err().contains("--install"));
        let err = run(&["--install", "/d", "--socket", "/s"]).unwrap_err();
        assert!(
            err.contains("takes nothing else") && err.contains("--socket"),
            "{err}"
        );
        let err = run(&["--socket", "/s", "--install", "/d"]).unwrap_err();
        assert!(err.contains("takes nothing else"), "{err}");
        // After `--` it is the command's own argument.
        assert_eq!(run(&["--", "--install"]).unwrap().command.len(), 1);
    }
}
