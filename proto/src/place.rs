//! Why the controller could not place a student: the one error of the `Place` RPC,
//! built by the controller and read back by the proxies.
//!
//! It travels as a gRPC status: the code says what kind of failure it is
//! (`NOT_FOUND`, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`), the message is for the
//! student, and metadata names the variant and carries its fields. So a client tells
//! "no live agents" from a controller it cannot reach (both `UNAVAILABLE`) by the
//! metadata, never by reading the message.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Metadata naming the variant ([`PlaceError::outcome`]).
const KIND_KEY: &str = "labssh-place-error";
/// Metadata with the environment a login asked for (binary: any bytes the client sent).
const REQUESTED_KEY: &str = "labssh-place-requested-bin";
/// Metadata with the catalogue's environments, one per line.
const AVAILABLE_KEY: &str = "labssh-place-available-bin";

/// Why no agent could be chosen. The messages are shown to students.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The requested environment is not in the catalogue.
    #[error("unknown environment '{requested}'; available: {}", available.join(", "))]
    UnknownEnvironment {
        /// What the login asked for.
        requested: String,
        /// Every environment in the catalogue, sorted.
        available: Vec<String>,
    },
    /// No agent is connected and heartbeating.
    #[error("no backend agent is available; try again shortly")]
    NoLiveAgents,
    /// Every live agent is at its capacity.
    #[error("all backend agents are full")]
    AllFull,
}

impl PlaceError {
    /// The `outcome` label of `labssh_placements_total`, and the variant's name on
    /// the wire.
    pub fn outcome(&self) -> &'static str {
        match self {
            PlaceError::UnknownEnvironment { .. } => "unknown_environment",
            PlaceError::NoLiveAgents => "no_live_agents",
            PlaceError::AllFull => "all_full",
        }
    }

    /// The error the controller sent in `status`; `None` for any other failure
    /// (the controller unreachable, a timeout, a refused certificate).
    pub fn from_status(status: &Status) -> Option<PlaceError> {
        let meta = status.metadata();
        let kind = meta.get(KIND_KEY)?.to_str().ok()?;
        let error = match (kind, status.code()) {
            ("unknown_environment", Code::NotFound) => PlaceError::UnknownEnvironment {
                requested: binary(meta, REQUESTED_KEY),
                available: binary(meta, AVAILABLE_KEY)
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            },
            ("no_live_agents", Code::Unavailable) => PlaceError::NoLiveAgents,
            ("all_full", Code::ResourceExhausted) => PlaceError::AllFull,
            _ => return None,
        };
        Some(error)
    }

    /// The gRPC code it travels with.
    pub fn code(&self) -> Code {
        match self {
            PlaceError::UnknownEnvironment { .. } => Code::NotFound,
            PlaceError::NoLiveAgents => Code::Unavailable,
            PlaceError::AllFull => Code::ResourceExhausted,
        }
    }
}

impl From<PlaceError> for Status {
    fn from(err: PlaceError) -> Self {
        let mut meta = MetadataMap::new();
        meta.insert(KIND_KEY, MetadataValue::from_static(err.outcome()));
        if let PlaceError::UnknownEnvironment {
            requested,
            available,
        } = &err
        {
            meta.insert_bin(
                REQUESTED_KEY,
                MetadataValue::from_bytes(requested.as_bytes()),
            );
            meta.insert_bin(
                AVAILABLE_KEY,
                MetadataValue::from_bytes(available.join("\n").as_bytes()),
            );
        }
        Status::with_metadata(err.code(), err.to_string(), meta)
    }
}

/// A binary metadata entry as text; empty when absent.
fn binary(meta: &MetadataMap, key: &str) -> String {
    meta.get_bin(key)
        .and_then(|v| v.to_bytes().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_code_message_and_variant() {
        let unknown = PlaceError::UnknownEnvironment {
            requested: "gpu\n+x".into(),
            available: vec!["default".into(), "desktop".into()],
        };
        let status = Status::from(unknown.clone());
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "unknown environment 'gpu\n+x'; available: default, desktop"
        );
        assert_eq!(PlaceError::from_status(&status), Some(unknown));

        let status = Status::from(PlaceError::AllFull);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "all backend agents are full");
        assert_eq!(PlaceError::from_status(&status), Some(PlaceError::AllFull));

        let status = Status::from(PlaceError::NoLiveAgents);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            PlaceError::from_status(&status),
            Some(PlaceError::NoLiveAgents)
        );
    }

    #[test]
    fn other_failures_are_not_placement_errors() {
        // What tonic reports for a controller it cannot reach: UNAVAILABLE too.
        let down = Status::unavailable("tcp connect error");
        assert_eq!(PlaceError::from_status(&down), None);
        assert_eq!(
            PlaceError::from_status(&Status::deadline_exceeded("timeout")),
            None
        );
        // A variant's name under another code is not trusted either.
        let mut meta = MetadataMap::new();
        meta.insert(KIND_KEY, MetadataValue::from_static("all_full"));
        let odd = Status::with_metadata(Code::Internal, "x", meta);
        assert_eq!(PlaceError::from_status(&odd), None);
    }
}
