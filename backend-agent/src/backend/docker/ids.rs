//! The ids a container of an environment with `uid = "ldap"` was made with,
//! recorded in its `labssh.ids` label, and the check that a login's identity
//! still gives the same: a directory that changed an account's uid must not
//! have the student silently run as a uid their home and files are not owned by.

use bollard::models::ContainerInspectResponse;
use labssh_proto::pb;

use super::container_spec::{parse_ids, LABEL_IDS};
use super::DockerBackend;
use crate::backend::BackendError;

/// The ids `inspect`'s label records.
pub(super) fn recorded(inspect: &ContainerInspectResponse) -> Option<(u32, u32)> {
    let labels = inspect.config.as_ref()?.labels.as_ref()?;
    parse_ids(labels.get(LABEL_IDS)?)
}

/// Whether `existing` may serve `env` (its ids filled in from the login's
/// identity): made with the same ids. One without the label was made before its
/// environment took ids from the identity: refused too (a login alone recreates it
/// as outdated before this is asked).
pub(super) fn check(
    existing: &ContainerInspectResponse,
    env: &pb::Environment,
) -> Result<(), BackendError> {
    if env.run_as_root || !(env.uid_from_identity || env.gid_from_identity) {
        return Ok(());
    }
    match recorded(existing) {
        Some((uid, gid)) if (uid, gid) == (env.uid, env.gid) => Ok(()),
        made => {
            let (made_uid, made_gid) = made.unwrap_or((0, 0));
            tracing::warn!(
                container = existing.name.as_deref().unwrap_or(""),
                made_uid,
                made_gid,
                uid = env.uid,
                gid = env.gid,
                "refused a login whose identity's ids differ from those its container was made with"
            );
            Err(BackendError::IdsChanged {
                made_uid,
                made_gid,
                uid: env.uid,
                gid: env.gid,
            })
        }
    }
}

impl DockerBackend {
    /// [`crate::backend::Backend::recorded_ids`] on Docker: the label.
    pub(super) async fn ids_of(&self, container: &str) -> Result<Option<(u32, u32)>, BackendError> {
        Ok(recorded(&*self.inspect(container).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerConfig;

    fn container(label: Option<&str>) -> ContainerInspectResponse {
        ContainerInspectResponse {
            config: Some(ContainerConfig {
                labels: Some(
                    label
                        .map(|l| (LABEL_IDS.to_owned(), l.to_owned()))
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nfs(uid: u32, gid: u32) -> pb::Environment {
        pb::Environment {
            name: "nfs".into(),
            uid,
            gid,
            uid_from_identity: true,
            gid_from_identity: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_container_serves_only_the_ids_it_was_made_with() {
        assert_eq!(
            recorded(&container(Some("20001:20000"))),
            Some((20001, 20000))
        );
        assert_eq!(recorded(&container(Some("x:1"))), None);
        assert!(check(&container(Some("20001:20000")), &nfs(20001, 20000)).is_ok());
        let changed = check(&container(Some("20001:20000")), &nfs(20002, 20000)).unwrap_err();
        assert_eq!(
            changed.to_string(),
            "your container was made for uid 20001 gid 20000, and your account now has uid 20002 gid 20000; ask your operator to move your files and remove the old container"
        );
        assert!(check(&container(None), &nfs(20001, 20000)).is_err());
        // Fixed ids: no label needed.
        let fixed = pb::Environment {
            uid: 1000,
            gid: 1000,
            ..Default::default()
        };
        assert!(check(&container(None), &fixed).is_ok());
    }
}
