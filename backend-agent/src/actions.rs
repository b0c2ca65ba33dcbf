//! Operators' and students' actions on one of this node's containers, relayed by
//! the controller (`labssh container stop|start|reset|remove`, and a student's
//! self-service login): the sessions in it are ended first, each told why in one
//! line, then the container is stopped, started, made anew (its home kept) or
//! removed, every change going through the lifecycle's records.

use labssh_proto::pb;
use pb::ContainerVerb as Verb;

use crate::backend::{BackendError, ContainerInfo};
use crate::identity;
use crate::lifecycle::{Reason, State, Transition};
use crate::names;
use crate::start_queue::{Caller, Class};
use crate::state::{EnsureError, Shared};
use pb::ContainerState;

/// Why an action could not be done; the message is for the operator or student.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
    /// No such container on this node.
    #[error("{user} has no container of '{environment}' on agent {agent}")]
    NotFound {
        /// Whose.
        user: String,
        /// Of which environment.
        environment: String,
        /// This agent.
        agent: String,
    },
    /// The home is still used by the student's other containers here.
    #[error("{user}'s home is also used by their container(s) of {others} on this node; remove those first")]
    HomeInUse {
        /// Whose.
        user: String,
        /// The other environments, comma-separated.
        others: String,
    },
    /// Starting or making the container again failed.
    #[error(transparent)]
    Ensure(#[from] EnsureError),
    /// The runtime failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Carries out `request` on this node.
pub async fn act(
    shared: &Shared,
    request: &pb::ContainerActionRequest,
) -> Result<pb::ContainerActionReply, ActionError> {
    let (user, environment) = (request.user.as_str(), request.environment.as_str());
    if !names::is_valid_user(user) || !names::is_valid_env(environment) {
        return Err(ActionError::Invalid(format!(
            "invalid user or environment name {user:?}+{environment:?}"
        )));
    }
    let verb = Verb::try_from(request.verb).unwrap_or(Verb::Unspecified);
    let inventory = shared.inventory.list();
    let Some(found) = inventory
        .iter()
        .find(|c| c.user == user && c.environment == environment)
    else {
        return Err(ActionError::NotFound {
            user: user.to_owned(),
            environment: environment.to_owned(),
            agent: shared.name.clone(),
        });
    };
    let who = who(&request.by);
    let change = |from: State, to: State| Transition {
        container: found.name.clone(),
        user: user.to_owned(),
        environment: environment.to_owned(),
        from,
        to,
        reason: Reason::Action,
    };
    let from = state_of(found);
    let lifecycle = &shared.lifecycle;
    let key = (user, environment);
    let (ended, state, message) = match verb {
        Verb::Stop => {
            let why = format!("your container was stopped by {who}; your files are kept, and logging in again starts it");
            let (ended, stopped) = lifecycle
                .take(key, &why, async {
                    match from {
                        State::Stopped => Ok(()),
                        _ => lifecycle.stop_taken(change(from, State::Stopped)).await,
                    }
                })
                .await;
            stopped?;
            (
                ended,
                ContainerState::Stopped,
                "stopped; the next login starts it",
            )
        }
        Verb::Start => {
            start(shared, found, Reason::Action).await?;
            (0, ContainerState::Running, "running")
        }
        Verb::Reset => {
            // What it was made for, read before it goes.
            let env = resolved(shared, found).await?;
            let why = format!("your container is being reset by {who}: it is made anew from its image, your home directory kept; log in again");
            let (ended, removed) = lifecycle
                .take(
                    key,
                    &why,
                    remove(shared, found, change(from, State::Absent)),
                )
                .await;
            removed?;
            let caller = Caller::quiet(Class::Student);
            shared
                .ensure_resolved(user, env, None, caller, Reason::Action)
                .await?;
            (
                ended,
                ContainerState::Running,
                "made anew from its image, the home kept",
            )
        }
        Verb::Remove => {
            let others: Vec<&str> = inventory
                .iter()
                .filter(|c| c.user == user && c.environment != environment)
                .map(|c| c.environment.as_str())
                .collect();
            if request.remove_home && !others.is_empty() {
                return Err(ActionError::HomeInUse {
                    user: user.to_owned(),
                    others: others.join(", "),
                });
            }
            let why = match request.remove_home {
                true => format!("your container and your home directory were removed by {who}"),
                false => {
                    format!("your container was removed by {who}; your home directory is kept")
                }
            };
            let (ended, removed) = lifecycle
                .take(key, &why, async {
                    remove(shared, found, change(from, State::Absent)).await?;
                    if request.remove_home {
                        shared.backend.remove_home(user).await?;
                    }
                    Ok::<_, BackendError>(())
                })
                .await;
            removed?;
            let message = match request.remove_home {
                true => "removed, and its home with it",
                false => "removed, the home kept",
            };
            (ended, ContainerState::Unspecified, message)
        }
        Verb::Unspecified => {
            return Err(ActionError::Invalid(
                "no action given: stop, start, reset or remove".to_owned(),
            ))
        }
    };
    tracing::info!(
        user,
        environment,
        container = %found.name,
        verb = verb.as_str_name(),
        by = %request.by,
        sessions_ended = ended,
        "container action"
    );
    Ok(pb::ContainerActionReply {
        agent: shared.name.clone(),
        container: found.name.clone(),
        state: state.into(),
        sessions_ended: ended,
        message: format!("{user}+{environment} on {}: {message}", shared.name),
    })
}

/// Who acted, as the student reads it.
fn who(by: &str) -> &'static str {
    match by {
        "student" => "you (from another login)",
        _ => "an operator",
    }
}

/// The lifecycle's name for the inventory's state.
fn state_of(container: &ContainerInfo) -> State {
    use crate::backend::ContainerState as Known;
    match container.state {
        Known::Running | Known::Creating => State::Running,
        Known::Paused => State::Paused,
        Known::Stopped => State::Stopped,
    }
}

/// The container's environment as the catalogue has it now, with the ids it was
/// made with.
async fn resolved(
    shared: &Shared,
    container: &ContainerInfo,
) -> Result<pb::Environment, ActionError> {
    let env = shared
        .catalogue
        .get(&container.environment)
        .map_err(EnsureError::from)?;
    identity::of_container(&shared.backend, env, &container.name, container.ids)
        .await
        .ok_or_else(|| {
            ActionError::Invalid(format!(
                "container {} records no uid/gid for its environment, which takes them from the login; log in to start it",
                container.name
            ))
        })
}

/// Starts (or thaws) the container as it is.
async fn start(
    shared: &Shared,
    container: &ContainerInfo,
    reason: Reason,
) -> Result<(), ActionError> {
    let env = resolved(shared, container).await?;
    let caller = Caller::quiet(Class::Student);
    shared
        .ensure_resolved(&container.user, env, None, caller, reason)
        .await?;
    Ok(())
}

/// Removes the container (the home kept) and records it.
async fn remove(
    shared: &Shared,
    container: &ContainerInfo,
    change: Transition,
) -> Result<(), BackendError> {
    shared.backend.remove(&container.name).await?;
    shared.inventory.note_removed(&container.name);
    shared.lifecycle.note_action(change);
    Ok(())
}
