//! Which unix socket paths a student may forward to or listen on: absolute paths to
//! files of their own container, short enough for the kernel. The path is resolved by
//! the container's helper inside the container's mount namespace and as the student,
//! so the container's files and permissions decide the rest; this only refuses what
//! could name something else, or what the kernel would refuse less clearly.

use labssh_helper_proto::wire::MAX_SOCKET_PATH;

use super::policy::Refused;

/// Where labssh keeps its own files in every container (the helper's socket).
const LABSSH_DIR: &str = "/.labssh";

/// Refuses a socket path that is not a plain absolute path inside the container.
pub fn check(path: &str) -> Result<(), Refused> {
    let refuse = |why: &str| Err(Refused(format!("socket path {path:?} {why}")));
    if !path.starts_with('/') {
        return refuse("is not absolute; give the socket's full path inside your container");
    }
    if path.len() > MAX_SOCKET_PATH {
        return refuse(&format!(
            "is {} bytes long; a unix socket path takes at most {MAX_SOCKET_PATH}",
            path.len()
        ));
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    if path.split('/').any(|p| p == "..") {
        return refuse("contains '..'; give the path without it");
    }
    match parts.next() {
        // Other processes' roots and descriptors: not files of the container.
        Some("proc") => refuse("is under /proc, which reaches outside your container's files"),
        Some(first) if format!("/{first}") == LABSSH_DIR => {
            refuse("is labssh's own (its helper's socket), not yours")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(path: &str) -> String {
        check(path).unwrap_err().0
    }

    #[test]
    fn plain_absolute_paths_pass() {
        for path in [
            "/run/jupyter.sock",
            "/tmp/app.sock",
            "/home/alice/.x/s",
            "/s",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert_eq!(check(&longest), Ok(()));
    }

    #[test]
    fn other_paths_are_refused_with_the_reason() {
        assert!(why("run/x.sock").contains("not absolute"));
        assert!(why("").contains("not absolute"));
        let long = format!("/{}", "a".repeat(MAX_SOCKET_PATH));
        assert!(why(&long).contains("108 bytes long"), "{}", why(&long));
        assert!(why("/tmp/../proc/1/root/x").contains("'..'"));
        assert!(why("/proc/1/root/run/docker.sock").contains("/proc"));
        assert!(why("//proc/self/root/x").contains("/proc"));
        assert!(why("/.labssh/run/helper.sock").contains("labssh's own"));
        assert!(why("/a\0b").contains("NUL"));
        // Only the exact directories, not names that start alike.
        assert_eq!(check("/processes/x.sock"), Ok(()));
        assert_eq!(check("/.labssh-not/x.sock"), Ok(()));
    }
}
