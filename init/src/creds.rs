//! Who a child runs as: user and groups from the image's own /etc/passwd and
//! /etc/group (read directly; a static binary has no NSS), and the capabilities the
//! helper holds only for itself.

/// Identity of a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, the primary one first.
    pub groups: Vec<u32>,
}

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

impl Creds {
    /// Numeric ids as `docker exec --user uid:gid` treats them: the supplementary groups
    /// are the primary one plus those /etc/group lists the user in, if /etc/passwd
    /// knows the uid.
    pub fn for_ids(uid: u32, gid: u32) -> Creds {
        let passwd = std::fs::read_to_string(PASSWD).unwrap_or_default();
        let group = std::fs::read_to_string(GROUP).unwrap_or_default();
        let name = passwd_entries(&passwd)
            .find(|e| e.uid == uid)
            .map(|e| e.name.to_owned());
        Creds {
            uid,
            gid,
            groups: groups_of(&group, name.as_deref(), gid),
        }
    }

    /// An image's `USER`: `name`, `uid`, `name:group` or `uid:gid`, as Docker resolves it
    /// (a name must exist in /etc/passwd; a numeric uid need not). Empty means root.
    pub fn for_image_user(spec: &str) -> Result<Creds, String> {
        if spec.is_empty() {
            return Ok(Creds::for_ids(0, 0));
        }
        let passwd = std::fs::read_to_string(PASSWD).unwrap_or_default();
        let group = std::fs::read_to_string(GROUP).unwrap_or_default();
        resolve(spec, &passwd, &group)
    }
}

fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Creds, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd_entries(passwd).find(|e| e.name == user || e.uid_text == user);
    let (uid, name, default_gid) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, Some(e.name), e.gid),
        (None, Ok(uid)) => (uid, None, 0),
        (None, Err(_)) => return Err(format!("user {user:?} is not in {PASSWD}")),
    };
    let gid = match grp {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| format!("group {g:?} is not in {GROUP}"))?,
        },
    };
    Ok(Creds {
        uid,
        gid,
        groups: groups_of(group, name, gid),
    })
}

/// `gid` followed by the groups that list `name` as a member.
fn groups_of(group: &str, name: Option<&str>, gid: u32) -> Vec<u32> {
    let mut groups = vec![gid];
    if let Some(name) = name {
        for e in group_entries(group) {
            if e.members.split(',').any(|m| m == name) && !groups.contains(&e.gid) {
                groups.push(e.gid);
            }
        }
    }
    groups
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid_text: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid_text = f.next()?;
        let gid = f.next()?.parse().ok()?;
        Some(PasswdEntry {
            name,
            uid_text,
            uid: uid_text.parse().ok()?,
            gid,
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        Some(GroupEntry {
            name,
            gid,
            members: f.next().unwrap_or(""),
        })
    })
}

/// Capability numbers from a comma-separated list (`--drop-caps 6,7,8`).
pub fn parse_caps(list: &str) -> Result<Vec<u32>, String> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .ok()
                .filter(|&c| c < 64)
                .ok_or_else(|| format!("{s:?} is not a capability number"))
        })
        .collect()
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Removes `caps` from the calling process's effective, permitted and inheritable
/// sets. Needs no privilege: a process may always give capabilities up. Only
/// async-signal-safe calls, so a freshly forked child may use it.
pub fn drop_from_process(caps: &[u32]) -> Result<(), i32> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the kernel's v3 layout.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    for &cap in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        data[word].inheritable &= !bit;
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Removes `caps` from the bounding set, so not even a root child regains them. Needs
/// CAP_SETPCAP; without it (an agent that could not grant it) the other defences hold:
/// no-new-privileges and [`drop_from_process`].
pub fn drop_from_bounding_set(caps: &[u32]) {
    // Dropping CAP_SETPCAP from the bounding set leaves it effective, so the order of
    // the list does not matter.
    for &cap in caps {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          www:x:33:33::/var/www:/bin/false\n\
                          broken line\n\
                          alice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:alice,bob\nvideo:x:44:alice\n";

    #[test]
    fn image_users_resolve_like_docker() {
        let c = resolve("www", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (33, 33, vec![33]));
        let c = resolve("alice", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (1000, 1000, vec![1000, 50, 44]));
        let c = resolve("1000:staff", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 50));
        let c = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (4242, 0, vec![0]));
        let c = resolve("4242:7", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (4242, 7));
        assert!(resolve("nobody", PASSWD, GROUP).is_err());
        assert!(resolve("alice:nogroup", PASSWD, GROUP).is_err());
    }

    #[test]
    fn numeric_ids_get_memberships_of_known_users() {
        assert_eq!(groups_of(GROUP, Some("alice"), 1000), vec![1000, 50, 44]);
        assert_eq!(groups_of(GROUP, None, 1000), vec![1000]);
    }

    #[test]
    fn cap_lists() {
        assert_eq!(parse_caps("6,7,8").unwrap(), vec![6, 7, 8]);
        assert_eq!(parse_caps("").unwrap(), Vec::<u32>::new());
        assert!(parse_caps("6,x").is_err());
        assert!(parse_caps("99").is_err());
    }
}
