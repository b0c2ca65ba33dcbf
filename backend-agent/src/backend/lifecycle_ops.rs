//! What the lifecycle asks of a runtime beyond ensuring containers: the steps an
//! ensure takes (for the student's progress line and the transition count), and what
//! the idle loop reads (CPU time, the student's keep-alive file).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::BackendError;
pub use crate::start_queue::Permit;

/// A step an ensure takes on the way to a running container, reported before it is
/// taken (so the student reads it while waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureStep {
    /// Unfreezing a paused container.
    Unpausing,
    /// Starting a stopped container.
    Starting,
    /// Creating a container that did not exist.
    Creating,
    /// Removing and creating again, the home kept.
    Recreating(Renewal),
}

/// Why a container is recreated at a login with no other session open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// It is older than the environment's `max_age`.
    MaxAge(Duration),
    /// Its image or settings are not the environment's any more (a roll-out).
    Outdated,
}

/// Reports [`EnsureStep`]s as they are taken.
pub type StepSink = Arc<dyn Fn(EnsureStep) + Send + Sync>;

/// Waits for a place in the node's start queue ([`crate::start_queue`]).
pub type Admission = Arc<
    dyn Fn() -> futures::future::BoxFuture<'static, Result<Permit, BackendError>> + Send + Sync,
>;

/// How an ensure may go about it.
#[derive(Clone, Default)]
pub struct EnsureOptions {
    /// No other session, forward or listener uses the container: it may be recreated
    /// (older than `max_age`, or outdated).
    pub renew: bool,
    /// Told each step before it is taken.
    pub steps: Option<StepSink>,
    /// Awaited right before a container is created or started (nothing of the
    /// runtime's touched before); none: no queue.
    pub admission: Option<Admission>,
}

impl EnsureOptions {
    /// Reports `step`, if anyone listens.
    pub fn step(&self, step: EnsureStep) {
        if let Some(steps) = &self.steps {
            steps(step);
        }
    }

    /// Waits for a place in the start queue, then reports `step` (if any). The
    /// permit is held until the container is ready (the ensure returns).
    pub async fn admit(&self, step: Option<EnsureStep>) -> Result<Option<Permit>, BackendError> {
        let permit = match &self.admission {
            Some(admission) => Some(admission().await?),
            None => None,
        };
        if let Some(step) = step {
            self.step(step);
        }
        Ok(permit)
    }
}

/// The student's keep-alive file as read from their home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveFile {
    /// When it was last written.
    pub modified: SystemTime,
    /// Its first bytes, as text.
    pub text: String,
}

/// `user`'s keep-alive file in the running `container` as the host sees it
/// (`inside`): read without following any symlink, at most [`KEEPALIVE_MAX_BYTES`],
/// and only a regular file of the student's; `None` otherwise.
pub(crate) async fn read_keepalive(
    inside: &super::netns::Container,
    container: &str,
    user: &str,
    env: &labssh_proto::pb::Environment,
) -> Option<KeepaliveFile> {
    let path = format!("{}/{KEEPALIVE_FILE}", super::home_dir(user));
    let file = match inside.read_plain(path, KEEPALIVE_MAX_BYTES).await {
        Ok(file) => file,
        Err(e) => {
            tracing::trace!(container, error = %e, "no keep-alive file");
            return None;
        }
    };
    let owner = if env.run_as_root { 0 } else { env.uid };
    if file.uid != owner {
        tracing::debug!(
            container,
            uid = file.uid,
            "keep-alive file not the student's; ignored"
        );
        return None;
    }
    Some(KeepaliveFile {
        modified: file.modified,
        text: file.text,
    })
}

/// Where in the home the keep-alive file is: `echo 3h > ~/.labssh-keepalive`.
pub const KEEPALIVE_FILE: &str = ".labssh-keepalive";

/// More than a duration is never read from the keep-alive file.
pub const KEEPALIVE_MAX_BYTES: u64 = 64;

/// A hash of what in `env` a container is made of: the whole environment but what
/// applies without a new container (forwarding, description, hooks, lifecycle, home
/// quota, the services' friendly names and readers) and the network, which has its own migration. New fields count by
/// themselves. Ids taken from the login's identity count as the catalogue sends
/// them (0), so a container made with a student's own ids is not outdated for them;
/// that they stay the student's is checked against the container's
/// `labssh.ids` label instead.
pub fn settings_hash(env: &labssh_proto::pb::Environment) -> String {
    use prost::Message;
    use sha2::{Digest, Sha256};
    let mut made_of = env.clone();
    made_of.forwarding = None;
    made_of.description.clear();
    made_of.hooks.clear();
    made_of.lifecycle = None;
    made_of.home_quota_mb = 0;
    made_of.network = None;
    made_of.service_names.clear();
    made_of.service_readers.clear();
    if made_of.uid_from_identity {
        made_of.uid = 0;
    }
    if made_of.gid_from_identity {
        made_of.gid = 0;
    }
    // Maps are ordered (proto/build.rs), so equal settings encode alike.
    let digest = Sha256::digest(made_of.encode_to_vec());
    hex::encode(&digest[..12])
}
