//! `--account NAME:UID:GID:HOME:SHELL`: gives the student a name in a pod, where no
//! agent writes the image's /etc/passwd beforehand (on Docker the agent binds a
//! passwd with the student in). Programs look their user up: bash prints "I have no
//! name!", ssh tools refuse. Before the main command starts, labssh-init appends the
//! student to /etc/passwd, and a group of theirs to /etc/group, unless the image has
//! entries with those ids or that name. Best effort: a read-only root, or a helper
//! that is not root (Pod Security `restricted`), leaves the files as they are, said
//! once in the log.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The student's entry, as the agent passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

impl Account {
    /// Parses `NAME:UID:GID:HOME:SHELL`.
    pub fn parse(spec: &str) -> Result<Account, String> {
        let bad = || format!("--account {spec:?}: expected NAME:UID:GID:HOME:SHELL");
        let fields: Vec<&str> = spec.split(':').collect();
        let [name, uid, gid, home, shell] = fields[..] else {
            return Err(bad());
        };
        let plain = |s: &str| !s.is_empty() && !s.contains(['\n', ',']);
        if !plain(name) || !plain(home) || !plain(shell) || name.starts_with(['-', '+']) {
            return Err(bad());
        }
        Ok(Account {
            name: name.to_owned(),
            uid: uid.parse().map_err(|_| bad())?,
            gid: gid.parse().map_err(|_| bad())?,
            home: home.to_owned(),
            shell: shell.to_owned(),
        })
    }

    /// The /etc/passwd line to add to `passwd`, if it has none for this uid or name.
    fn passwd_line(&self, passwd: &str) -> Option<String> {
        let taken =
            crate::creds::passwd_entries(passwd).any(|e| e.name == self.name || e.uid == self.uid);
        (!taken).then(|| {
            format!(
                "{}:x:{}:{}::{}:{}\n",
                self.name, self.uid, self.gid, self.home, self.shell
            )
        })
    }

    /// The /etc/group line to add to `group`, if it has no group with this gid (nor
    /// one by the student's name).
    fn group_line(&self, group: &str) -> Option<String> {
        let taken =
            crate::creds::group_entries(group).any(|e| e.name == self.name || e.gid == self.gid);
        (!taken).then(|| format!("{}:x:{}:\n", self.name, self.gid))
    }
}

/// The line a file lacks for an account, if it lacks one.
type LineFor = fn(&Account, &str) -> Option<String>;

/// Adds `account` to `etc`/passwd and `etc`/group where they lack it; failures are
/// logged.
pub fn add(etc: &Path, account: &Account) {
    let files: [(&str, LineFor); 2] = [
        ("passwd", Account::passwd_line),
        ("group", Account::group_line),
    ];
    for (file, line) in files {
        let path = etc.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Some(mut line) = line(account, &text) else {
            continue;
        };
        if !text.is_empty() && !text.ends_with('\n') {
            line.insert(0, '\n');
        }
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            crate::log!(
                "cannot add {} to {} ({e}); programs will not know the name of uid {}",
                account.name,
                path.display(),
                account.uid
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Account {
        Account::parse("alice:1000:1000:/home/alice:/bin/bash").unwrap()
    }

    #[test]
    fn specs_parse_and_bad_ones_are_refused() {
        assert_eq!(alice().home, "/home/alice");
        for bad in [
            "alice",
            "alice:x:1000:/h:/bin/sh",
            ":1:1:/h:/bin/sh",
            "-x:1:1:/h:/bin/sh",
            "a:1:1:/h:/bin/sh:extra",
        ] {
            assert!(Account::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_student_is_added_once_and_never_over_an_image_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh").unwrap();
        std::fs::write(dir.path().join("group"), "root:x:0:\nstaff:x:1000:\n").unwrap();
        add(dir.path(), &alice());
        add(dir.path(), &alice());
        let passwd = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/bash\n"
        );
        // The image has a group 1000 already: kept as it is.
        let group = std::fs::read_to_string(dir.path().join("group")).unwrap();
        assert_eq!(group, "root:x:0:\nstaff:x:1000:\n");
        // An image user with the uid: nothing added.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("passwd"),
            "ubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n",
        )
        .unwrap();
        add(other.path(), &alice());
        let passwd = std::fs::read_to_string(other.path().join("passwd")).unwrap();
        assert!(!passwd.contains("alice"), "{passwd}");
        assert!(std::fs::read_to_string(other.path().join("group"))
            .unwrap()
            .contains("alice:x:1000:"));
    }

    #[test]
    fn a_symlinked_passwd_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("passwd")).unwrap();
        add(dir.path(), &alice());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }
}
