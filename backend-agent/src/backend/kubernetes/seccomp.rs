//! An environment's own seccomp profile put where the node's kubelet finds it: Pod
//! Security allows only `RuntimeDefault` or `Localhost` profiles, and a `Localhost`
//! one must be a file on the node before the pod is made. The agent, one per node,
//! writes it under `kubernetes.seccomp_dir` (the kubelet's directory, mounted from
//! the host), at the path the pod names, once: the name is a hash of the profile, so
//! a changed profile is a new file and a written one never changes.

use std::io::Write;
use std::path::Path;

use labssh_proto::pb;

use super::objects::seccomp_profile_file;
use crate::backend::BackendError;

/// Makes sure `env`'s own seccomp profile (if it has one) is under `dir`.
pub fn install_profile(dir: &Path, env: &pb::Environment) -> Result<(), BackendError> {
    let Some((relative, profile)) = seccomp_profile_file(env) else {
        return Ok(());
    };
    let failed = |e: std::io::Error| {
        BackendError::CreateFailed(format!(
            "environment {}: its seccomp profile cannot be written under {} (kubernetes.seccomp_dir): {e}",
            env.name,
            dir.display()
        ))
    };
    if serde_json::from_str::<serde_json::Value>(profile).is_err() {
        return Err(BackendError::CreateFailed(format!(
            "environment {}: its seccomp profile is not JSON",
            env.name
        )));
    }
    let path = dir.join(&relative);
    if path.is_file() {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(failed)?;
    // Written aside and renamed, so the kubelet never reads half a profile.
    let mut file = tempfile::NamedTempFile::new_in(parent).map_err(failed)?;
    file.write_all(profile.as_bytes()).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    file.as_file().set_permissions(mode).map_err(failed)?;
    file.persist(&path).map_err(|e| failed(e.error))?;
    tracing::info!(path = %path.display(), environment = %env.name, "wrote an environment's seccomp profile for the kubelet");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seccomp: &str) -> pb::Environment {
        pb::Environment {
            name: "strict".into(),
            isolation: Some(pb::Isolation {
                seccomp: seccomp.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn profiles_land_where_the_pod_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let profile = r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#;
        let e = env(profile);
        install_profile(dir.path(), &e).unwrap();
        let (relative, _) = seccomp_profile_file(&e).unwrap();
        let written = dir.path().join(&relative);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), profile);
        assert!(relative.starts_with("labssh/"), "{relative}");
        // Again: the file is there, left as it is.
        install_profile(dir.path(), &e).unwrap();
        // The runtime's default needs no file.
        install_profile(dir.path(), &env("default")).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("labssh"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_profile_that_cannot_be_written_or_read_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let err = install_profile(dir.path(), &env("{not json")).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = install_profile(&file, &env("{}")).unwrap_err();
        assert!(err.to_string().contains("kubernetes.seccomp_dir"), "{err}");
    }
}
