//! What went wrong in the container runtime, in words a student can read.

/// Why a runtime operation failed. The text is shown to students, so it says what went
/// wrong in their terms and carries the runtime's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The user or environment name cannot be used in a container name.
    #[error("invalid {what} name '{name}'")]
    InvalidName {
        /// "user" or "environment".
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The environment's image is not on this node, and nodes do not pull.
    #[error("image '{image}' is not available on agent '{agent}'")]
    ImageNotAvailable {
        /// The image reference.
        image: String,
        /// This agent's name.
        agent: String,
    },
    /// A container with the expected name belongs to someone else.
    #[error("container '{0}' exists but does not belong to this user and environment")]
    NameTaken(String),
    /// Creating the container failed.
    #[error("container could not be created: {0}")]
    CreateFailed(String),
    /// Starting the container failed; carries the runtime's message.
    #[error("container failed to start: {0}")]
    StartFailed(String),
    /// Starting the process failed.
    #[error("could not start the process: {0}")]
    SpawnFailed(String),
    /// The signal name is not one SSH defines.
    #[error("unknown signal '{0}'")]
    UnknownSignal(String),
    /// A TCP connection inside the container could not be opened.
    #[error("cannot connect to {target} in the container: {message}")]
    ConnectFailed {
        /// `host:port` as asked.
        target: String,
        /// Why.
        message: String,
    },
    /// Listening inside the container failed.
    #[error("cannot listen on {address} in the container: {message}")]
    ListenFailed {
        /// The address asked for.
        address: String,
        /// Why.
        message: String,
    },
    /// The environment's GPUs cannot be had on this node now.
    #[error("{0}")]
    GpusUnavailable(String),
    /// A shared course-data volume the environment mounts is not on this node (Docker
    /// would create an empty one instead).
    #[error("the course data for {target} (volume '{volume}') is missing on node '{agent}'; please tell your instructor")]
    CourseDataMissing {
        /// The volume's name.
        volume: String,
        /// Where it is mounted.
        target: String,
        /// This agent's name.
        agent: String,
    },
    /// The node's start queue is full (see [`crate::start_queue`]).
    #[error("this node is starting {starting} containers already; try again in {retry} seconds")]
    Busy {
        /// Containers being started and waiting.
        starting: usize,
        /// Whole seconds, at least 1.
        retry: u64,
    },
    /// The client went away while its container waited to start; nothing was made.
    #[error("the client left while its container waited to start")]
    LeftQueue,
    /// The container was made with other ids than the login's identity gives now
    /// (the directory changed the account's uid or gid): it is not used, so nothing
    /// runs as someone its home does not belong to.
    #[error("your container was made for uid {made_uid} gid {made_gid}, and your account now has uid {uid} gid {gid}; ask your operator to move your files and remove the old container")]
    IdsChanged {
        /// The uid it was made for.
        made_uid: u32,
        /// The gid it was made for.
        made_gid: u32,
        /// The identity's uid now.
        uid: u32,
        /// The identity's gid now.
        gid: u32,
    },
    /// Any other runtime failure.
    #[error("container runtime error while {action}: {message}")]
    Runtime {
        /// What the agent was doing.
        action: &'static str,
        /// The runtime's message.
        message: String,
    },
}

impl BackendError {
    /// `user` and `env` as names containers, pods and volumes can carry
    /// ([`crate::names`]), else the error naming the one that cannot.
    pub fn check_names(user: &str, env: &str) -> Result<(), BackendError> {
        if !crate::names::is_valid_user(user) {
            return Err(BackendError::InvalidName {
                what: "user",
                name: user.to_owned(),
            });
        }
        if !crate::names::is_valid_env(env) {
            return Err(BackendError::InvalidName {
                what: "environment",
                name: env.to_owned(),
            });
        }
        Ok(())
    }
}
