//! `labssh user add`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

/// Where `labssh up` keeps its users file by default.
pub const DEFAULT_USERS_FILE: &str = "labssh-dev/users.toml";

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user, or update their password or keys.
    Add {
        /// Login name (lowercase letters, digits, '_' and '-').
        name: String,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Add the public key in this file (OpenSSH format, e.g. id_ed25519.pub).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Add the user to this group (a class, for `labssh prestart --group`);
        /// repeatable, and groups already there stay.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// The numeric uid for environments with `uid = "ldap"` (as a directory's
        /// uidNumber would give it).
        #[arg(long)]
        uid: Option<u32>,
        /// The numeric gid, likewise.
        #[arg(long)]
        gid: Option<u32>,
        /// Users file to edit.
        #[arg(long, default_value = DEFAULT_USERS_FILE)]
        users: PathBuf,
    },
}

pub fn run(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_stdin,
            key,
            groups,
            uid,
            gid,
            users,
        } => {
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                let password = line.trim_end_matches(['\n', '\r']).to_string();
                if password.is_empty() {
                    bail!("--password-stdin: no password on standard input");
                }
                Some(password)
            } else if key.is_none() && (!groups.is_empty() || uid.is_some() || gid.is_some()) {
                // Only groups or ids to set: the password stays as it is.
                None
            } else if key.is_none() {
                if !std::io::stdin().is_terminal() {
                    bail!("give --password-stdin, --key FILE, --group GROUP or --uid/--gid (standard input is not a terminal to ask on)");
                }
                let first = rpassword::prompt_password(format!("Password for {name}: "))?;
                let again = rpassword::prompt_password("Again: ")?;
                if first != again {
                    bail!("the passwords did not match");
                }
                Some(first)
            } else {
                None
            };
            let key_line = match &key {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("--key {}", path.display()))?,
                ),
                None => None,
            };
            labssh_proxy::users::add_user_in_groups(
                &users,
                &name,
                password.as_deref(),
                key_line.as_deref(),
                &groups,
            )?;
            if uid.is_some() || gid.is_some() {
                labssh_proxy::users::set_ids(&users, &name, uid, gid)?;
            }
            println!("user {name} saved in {}", users.display());
            Ok(())
        }
    }
}
