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
/// Metadata present when a refused login named no environment (the default was meant).
const DEFAULT_KEY: &str = "labssh-place-default";
/// Metadata with the GPU counts of [`PlaceError::NoGpusFree`]: "TOTAL FREE NEEDED".
const GPUS_KEY: &str = "labssh-place-gpus";
/// Metadata with the login suggested instead (binary: it holds the user's name).
const SUGGESTION_KEY: &str = "labssh-place-suggestion-bin";

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
    /// The environment is restricted to groups the student is in none of
    /// (`allowed_groups`); `requested` is the resolved name (the default filled in).
    #[error("{}", not_allowed_message(requested, *default, available))]
    NotAllowed {
        /// The environment asked for, or the default one.
        requested: String,
        /// Whether the login named none, so the default was meant.
        default: bool,
        /// The environments this student may use, sorted.
        available: Vec<String>,
    },
    /// No agent is connected and heartbeating.
    #[error("no backend agent is available; try again shortly")]
    NoLiveAgents,
    /// Every live agent is at its capacity.
    #[error("all backend agents are full")]
    AllFull,
    /// The environment takes GPUs and no live agent has that many free.
    #[error("{}", no_gpus_message(*total, *free, *needed, suggestion))]
    NoGpusFree {
        /// GPUs of all live agents.
        total: u32,
        /// Those nobody holds.
        free: u32,
        /// How many the environment takes on one node.
        needed: u32,
        /// A login to use instead (`alice+cpu`, an environment without GPUs); empty
        /// when there is none.
        suggestion: String,
    },
}

/// "environment 'gpu' is not available to you; available: default, web", and for
/// a login naming no environment, what to log in with instead.
fn not_allowed_message(requested: &str, default: bool, available: &[String]) -> String {
    let which = if default {
        format!("the default environment '{requested}'")
    } else {
        format!("environment '{requested}'")
    };
    if available.is_empty() {
        return format!(
            "{which} is not available to you, nor is any other; ask your teacher or operator"
        );
    }
    let hint = if default {
        " (log in as USER+NAME)"
    } else {
        ""
    };
    format!(
        "{which} is not available to you; available: {}{hint}",
        available.join(", ")
    )
}

/// "all 4 GPUs are in use; try again later or use alice+cpu", and its variants.
fn no_gpus_message(total: u32, free: u32, needed: u32, suggestion: &str) -> String {
    let instead = |joint: &str| {
        if suggestion.is_empty() {
            String::new()
        } else {
            format!("{joint}{suggestion}")
        }
    };
    if total == 0 {
        return format!("no node has GPUs now{}", instead("; use "));
    }
    let why = if free == 0 {
        format!("all {total} GPUs are in use")
    } else {
        format!("this environment needs {needed} GPUs on one node and no node has that many free ({free} of {total} GPUs are)")
    };
    format!("{why}; try again later{}", instead(" or use "))
}

impl PlaceError {
    /// The `outcome` label of `labssh_placements_total`, and the variant's name on
    /// the wire.
    pub fn outcome(&self) -> &'static str {
        match self {
            PlaceError::UnknownEnvironment { .. } => "unknown_environment",
            PlaceError::NotAllowed { .. } => "not_allowed",
            PlaceError::NoLiveAgents => "no_live_agents",
            PlaceError::AllFull => "all_full",
            PlaceError::NoGpusFree { .. } => "no_gpus_free",
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
            ("not_allowed", Code::PermissionDenied) => PlaceError::NotAllowed {
                requested: binary(meta, REQUESTED_KEY),
                default: meta.get(DEFAULT_KEY).is_some(),
                available: binary(meta, AVAILABLE_KEY)
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            },
            ("no_live_agents", Code::Unavailable) => PlaceError::NoLiveAgents,
            ("all_full", Code::ResourceExhausted) => PlaceError::AllFull,
            ("no_gpus_free", Code::ResourceExhausted) => {
                let counts: Vec<u32> = meta
                    .get(GPUS_KEY)?
                    .to_str()
                    .ok()?
                    .split(' ')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                let [total, free, needed] = counts[..] else {
                    return None;
                };
                PlaceError::NoGpusFree {
                    total,
                    free,
                    needed,
                    suggestion: binary(meta, SUGGESTION_KEY),
                }
            }
            _ => return None,
        };
        Some(error)
    }

    /// The gRPC code it travels with.
    pub fn code(&self) -> Code {
        match self {
            PlaceError::UnknownEnvironment { .. } => Code::NotFound,
            PlaceError::NotAllowed { .. } => Code::PermissionDenied,
            PlaceError::NoLiveAgents => Code::Unavailable,
            PlaceError::AllFull | PlaceError::NoGpusFree { .. } => Code::ResourceExhausted,
        }
    }
}

impl From<PlaceError> for Status {
    fn from(err: PlaceError) -> Self {
        let mut meta = MetadataMap::new();
        meta.insert(KIND_KEY, MetadataValue::from_static(err.outcome()));
        match &err {
            PlaceError::UnknownEnvironment {
                requested,
                available,
            } => {
                meta.insert_bin(
                    REQUESTED_KEY,
                    MetadataValue::from_bytes(requested.as_bytes()),
                );
                meta.insert_bin(
                    AVAILABLE_KEY,
                    MetadataValue::from_bytes(available.join("\n").as_bytes()),
                );
            }
            PlaceError::NotAllowed {
                requested,
                default,
                available,
            } => {
                meta.insert_bin(
                    REQUESTED_KEY,
                    MetadataValue::from_bytes(requested.as_bytes()),
                );
                meta.insert_bin(
                    AVAILABLE_KEY,
                    MetadataValue::from_bytes(available.join("\n").as_bytes()),
                );
                if *default {
                    meta.insert(DEFAULT_KEY, MetadataValue::from_static("1"));
                }
            }
            PlaceError::NoGpusFree {
                total,
                free,
                needed,
                suggestion,
            } => {
                if let Ok(counts) = format!("{total} {free} {needed}").parse() {
                    meta.insert(GPUS_KEY, counts);
                }
                meta.insert_bin(
                    SUGGESTION_KEY,
                    MetadataValue::from_bytes(suggestion.as_bytes()),
                );
            }
            PlaceError::NoLiveAgents | PlaceError::AllFull => {}
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
    fn not_allowed_names_only_the_students_environments() {
        let gpu = PlaceError::NotAllowed {
            requested: "gpu".into(),
            default: false,
            available: vec!["default".into(), "web".into()],
        };
        let status = Status::from(gpu.clone());
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "environment 'gpu' is not available to you; available: default, web"
        );
        assert_eq!(PlaceError::from_status(&status), Some(gpu));
        let default = PlaceError::NotAllowed {
            requested: "default".into(),
            default: true,
            available: vec!["cs101env".into()],
        };
        assert_eq!(
            default.to_string(),
            "the default environment 'default' is not available to you; available: cs101env (log in as USER+NAME)"
        );
        assert_eq!(
            PlaceError::from_status(&Status::from(default.clone())),
            Some(default)
        );
        let none = PlaceError::NotAllowed {
            requested: "gpu".into(),
            default: false,
            available: vec![],
        };
        assert_eq!(
            none.to_string(),
            "environment 'gpu' is not available to you, nor is any other; ask your teacher or operator"
        );
        assert_eq!(
            PlaceError::from_status(&Status::from(none.clone())),
            Some(none)
        );
    }

    #[test]
    fn no_gpus_free_round_trips_with_its_counts() {
        let busy = PlaceError::NoGpusFree {
            total: 4,
            free: 0,
            needed: 1,
            suggestion: "alice+cpu".into(),
        };
        let status = Status::from(busy.clone());
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "all 4 GPUs are in use; try again later or use alice+cpu"
        );
        assert_eq!(PlaceError::from_status(&status), Some(busy));
        let short = PlaceError::NoGpusFree {
            total: 8,
            free: 3,
            needed: 2,
            suggestion: String::new(),
        };
        assert_eq!(
            short.to_string(),
            "this environment needs 2 GPUs on one node and no node has that many free (3 of 8 GPUs are); try again later"
        );
        assert_eq!(
            PlaceError::from_status(&Status::from(short.clone())),
            Some(short)
        );
        let none = PlaceError::NoGpusFree {
            total: 0,
            free: 0,
            needed: 1,
            suggestion: "bob+default".into(),
        };
        assert_eq!(none.to_string(), "no node has GPUs now; use bob+default");
        // Counts that do not parse are not trusted.
        let mut meta = MetadataMap::new();
        meta.insert(KIND_KEY, MetadataValue::from_static("no_gpus_free"));
        meta.insert(GPUS_KEY, MetadataValue::from_static("4 x 1"));
        let odd = Status::with_metadata(Code::ResourceExhausted, "x", meta);
        assert_eq!(PlaceError::from_status(&odd), None);
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
