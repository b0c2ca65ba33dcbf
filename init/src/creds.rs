//! Who a child runs as: user and groups from the image's own /etc/passwd and
//! /etc/group (read directly; a static binary has no NSS), who the helper itself may
//! start children as, and the capabilities the helper holds only for itself.

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

/// Who the helper may start processes as: anyone when it is root (Docker, a pod at
/// the `baseline` Pod Security level), else only as itself (a pod at `restricted`,
/// which runs as its student with no capabilities and no way to gain any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// Root: any user and groups.
    Root,
    /// Not root: only these ids. A child keeps all of `groups` (dropping one needs
    /// CAP_SETGID); they are the ones the runtime gave every process of the pod.
    Only(Creds),
}

impl Authority {
    /// The helper's own: root when its effective uid is 0.
    pub fn current() -> Authority {
        // SAFETY: id calls; the buffer is valid for its length.
        unsafe {
            let (uid, gid) = (libc::geteuid(), libc::getegid());
            if uid == 0 {
                return Authority::Root;
            }
            let mut groups = vec![0 as libc::gid_t; 65536];
            let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
            groups.truncate(usize::try_from(n).unwrap_or(0));
            groups.retain(|&g| g != gid);
            groups.insert(0, gid);
            Authority::Only(Creds { uid, gid, groups })
        }
    }

    /// Whether the helper is root.
    pub fn is_root(&self) -> bool {
        matches!(self, Authority::Root)
    }

    /// What the main command runs as when `--user` names nobody: root, or the helper
    /// itself (as a pod's `runAsUser` replaces the image's USER).
    pub fn default_creds(&self) -> Creds {
        match self {
            Authority::Root => Creds::for_ids(0, 0),
            Authority::Only(own) => own.clone(),
        }
    }

    /// Refuses, in words the student reads, a child the helper cannot start as.
    pub fn permits(&self, creds: &Creds) -> Result<(), String> {
        let Authority::Only(own) = self else {
            return Ok(());
        };
        let refuse = |what: &str, have: &str, want: &str| {
            Err(format!(
                "this pod's helper runs as {what} {have} and cannot start processes as {what} {want}"
            ))
        };
        if creds.uid != own.uid {
            return refuse("uid", &own.uid.to_string(), &creds.uid.to_string());
        }
        if creds.gid != own.gid {
            return refuse("gid", &own.gid.to_string(), &creds.gid.to_string());
        }
        if let Some(missing) = creds.groups.iter().find(|g| !own.groups.contains(g)) {
            let have: Vec<String> = own.groups.iter().map(u32::to_string).collect();
            return Err(format!(
                "this pod's helper runs with groups {} and cannot start processes in group {missing}",
                have.join(",")
            ));
        }
        Ok(())
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

pub(crate) struct PasswdEntry<'a> {
    pub(crate) name: &'a str,
    uid_text: &'a str,
    pub(crate) uid: u32,
    gid: u32,
}

pub(crate) fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
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

pub(crate) struct GroupEntry<'a> {
    pub(crate) name: &'a str,
    pub(crate) gid: u32,
    members: &'a str,
}

pub(crate) fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
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
    if caps.is_empty() {
        return Ok(());
    }
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
/// CAP_SETPCAP; without it (an agent that could not grant it, a helper that is not
/// root) the other defences hold: no-new-privileges and [`drop_from_process`].
/// Capabilities already out of the bounding set (all of them in a pod that drops ALL)
/// are left alone. Only async-signal-safe calls.
pub fn drop_from_bounding_set(caps: &[u32]) {
    // Dropping CAP_SETPCAP from the bounding set leaves it effective, so the order of
    // the list does not matter.
    for &cap in caps {
        // SAFETY: prctl with integer arguments.
        unsafe {
            if libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
        }
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

    fn ids(uid: u32, gid: u32, groups: &[u32]) -> Creds {
        Creds {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_starts_anyone() {
        assert!(Authority::Root.permits(&ids(0, 0, &[0])).is_ok());
        assert!(Authority::Root.permits(&ids(1000, 50, &[50, 44])).is_ok());
        assert!(Authority::Root.is_root());
    }

    #[test]
    fn a_helper_that_is_not_root_starts_only_itself() {
        let helper = Authority::Only(ids(1000, 1000, &[1000, 50]));
        assert!(!helper.is_root());
        assert_eq!(helper.default_creds(), ids(1000, 1000, &[1000, 50]));
        helper.permits(&ids(1000, 1000, &[1000])).unwrap();
        helper.permits(&ids(1000, 1000, &[1000, 50])).unwrap();
        assert_eq!(
            helper.permits(&ids(0, 0, &[0])).unwrap_err(),
            "this pod's helper runs as uid 1000 and cannot start processes as uid 0"
        );
        assert_eq!(
            helper.permits(&ids(1000, 0, &[0])).unwrap_err(),
            "this pod's helper runs as gid 1000 and cannot start processes as gid 0"
        );
        let err = helper.permits(&ids(1000, 1000, &[1000, 44])).unwrap_err();
        assert_eq!(
            err,
            "this pod's helper runs with groups 1000,50 and cannot start processes in group 44"
        );
    }

    /// Set in the environment of this test binary run again as another user.
    const PROBE: &str = "LABSSH_INIT_AUTHORITY_PROBE";

    /// Prints the authority when run as the probe; passes otherwise.
    #[test]
    fn authority_probe() {
        if std::env::var_os(PROBE).is_some() {
            println!("authority={:?}", Authority::current());
        }
    }

    #[test]
    fn the_own_authority_is_read_from_the_process() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Only root can start the probe as someone else.
            let own = Authority::current();
            assert!(matches!(own, Authority::Only(ref c) if c.groups[0] == c.gid));
            return;
        }
        assert_eq!(Authority::current(), Authority::Root);
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "creds::tests::authority_probe", "--nocapture"])
            .env(PROBE, "1")
            .uid(4242)
            .gid(4343)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = Authority::Only(ids(4242, 4343, &[4343]));
        assert!(text.contains(&format!("authority={expected:?}")), "{text}");
    }

    #[test]
    fn cap_lists() {
        assert_eq!(parse_caps("6,7,8").unwrap(), vec![6, 7, 8]);
        assert_eq!(parse_caps("").unwrap(), Vec::<u32>::new());
        assert!(parse_caps("6,x").is_err());
        assert!(parse_caps("99").is_err());
    }
}
