//! `Controller.Prestart`: a class's containers created and started before it
//! begins.
//!
//! The users (the request's, plus a group's members from the users file) are
//! deduplicated in the order given; each is placed as a login is (the
//! registry's placement: sticky to an existing container, pending until the
//! agent reports it, so a burst does not overfill an agent) and its agent's
//! `Ensure` is called with `prestart` set, at most `concurrency` at a time per
//! agent. A user that fails (a malformed name, no agent, the agent's error) is
//! one FAILED result; the rest go on. When the receiver of the events goes away
//! (the client disconnected), users not yet started are dropped; Ensures in
//! flight finish, so no container is left half-made.

mod agents;
pub mod summary;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labssh_proto::names::{valid_user, USER_RULE};
use labssh_proto::pb;
use pb::PrestartOutcome as Outcome;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::catalogue::Catalogue;
use crate::config::{Config, MAX_PRESTART_CONCURRENCY};
use crate::members::{group_members, MembersError};
use crate::placement::PlaceError;
use crate::registry::Registry;
pub use agents::AgentClients;
pub use summary::Summary;

/// An image pull on a slow registry can take minutes; longer than this is a
/// node that will not answer.
const ENSURE_TIMEOUT: Duration = Duration::from_secs(300);
/// Events queued towards the caller; results are small and the caller reads
/// them as they come.
const EVENT_BUFFER: usize = 64;

/// Why a prestart could not begin at all (per-user failures are results).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrestartError {
    /// The environment is not in the catalogue.
    #[error(transparent)]
    Environment(PlaceError),
    /// The group's members could not be found.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// Neither users nor a group were given.
    #[error("give users or a group to prestart")]
    NoUsers,
    /// The request's concurrency is out of range.
    #[error("concurrency {0} is more than {MAX_PRESTART_CONCURRENCY} per agent")]
    Concurrency(u32),
}

/// The users one prestart goes through, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The environment, the default filled in.
    pub environment: String,
    /// Login names, deduplicated, in the order given (malformed ones too: each
    /// is reported).
    pub users: Vec<String>,
    /// Ensures in flight at once per agent.
    pub concurrency: u32,
}

/// Runs prestarts for the gRPC service and the scheduler.
#[derive(Debug)]
pub struct Prestarter {
    /// Agents and placement, shared with logins.
    registry: Arc<Registry>,
    /// Resolves environments.
    catalogue: Arc<Catalogue>,
    /// Where group members are read from.
    users_file: Option<PathBuf>,
    /// Concurrency per agent when a request names none.
    default_concurrency: u32,
    /// The controller's clients to agents.
    agents: AgentClients,
}

impl Prestarter {
    /// A prestarter over the controller's registry and catalogue.
    pub fn new(config: &Config, registry: Arc<Registry>, catalogue: Arc<Catalogue>) -> Self {
        Self {
            registry,
            catalogue,
            users_file: config.users_file().cloned(),
            default_concurrency: config.prestart_concurrency,
            agents: AgentClients::new(config.tls.clone()),
        }
    }

    /// Resolves a request into the users to go through.
    pub fn plan(&self, request: &pb::PrestartRequest) -> Result<Plan, PrestartError> {
        let environment = self
            .catalogue
            .resolve(&request.environment)
            .map_err(PrestartError::Environment)?
            .to_string();
        let mut users: Vec<String> = request.users.clone();
        if !request.group.is_empty() {
            users.extend(group_members(self.users_file.as_deref(), &request.group)?);
        }
        let mut seen = HashSet::new();
        users.retain(|u| seen.insert(u.clone()));
        if users.is_empty() {
            return Err(PrestartError::NoUsers);
        }
        let concurrency = match request.concurrency {
            0 => self.default_concurrency,
            n if n > MAX_PRESTART_CONCURRENCY => return Err(PrestartError::Concurrency(n)),
            n => n,
        };
        Ok(Plan {
            environment,
            users,
            concurrency,
        })
    }

    /// Starts `plan`: a `planned` event, then one `result` per user as each
    /// finishes. Dropping the receiver cancels the users not yet started.
    pub fn run(self: &Arc<Self>, plan: Plan) -> mpsc::Receiver<pb::PrestartEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(self.clone().drive(plan, tx));
        rx
    }

    async fn drive(self: Arc<Self>, plan: Plan, tx: mpsc::Sender<pb::PrestartEvent>) {
        let started = Instant::now();
        let planned = pb::PrestartEvent {
            event: Some(pb::prestart_event::Event::Planned(pb::PrestartPlanned {
                total: plan.users.len() as u32,
                environment: plan.environment.clone(),
            })),
        };
        if tx.send(planned).await.is_err() {
            return;
        }
        let environment: Arc<str> = plan.environment.into();
        let mut queues: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut jobs = JoinSet::new();
        for user in plan.users {
            let failed = |agent: &str, message: String| pb::PrestartResult {
                user: user.clone(),
                agent: agent.to_string(),
                outcome: Outcome::Failed.into(),
                message,
            };
            if !valid_user(&user) {
                let message = format!("invalid login name: use {USER_RULE}");
                if !send(&tx, failed("", message)).await {
                    break;
                }
                continue;
            }
            match self.place(&user, &environment) {
                Err(message) => {
                    if !send(&tx, failed("", message)).await {
                        break;
                    }
                }
                Ok((agent, _)) => {
                    let queue = queues
                        .entry(agent)
                        .or_insert_with(|| Arc::new(Semaphore::new(plan.concurrency as usize)))
                        .clone();
                    jobs.spawn(
                        self.clone()
                            .one(user, environment.clone(), queue, tx.clone()),
                    );
                }
            }
        }
        // Ensures in flight run to their end even when the caller has gone
        // (dropping one could leave a container half made); the others see the
        // caller gone and never start.
        // (Dropping the JoinSet would abort them, so it is always drained.)
        let mut finished = 0;
        let mut caller_gone = tx.is_closed();
        while let Some(joined) = jobs.join_next().await {
            if let Ok(Some(result)) = joined {
                finished += 1;
                if !send(&tx, result).await && !caller_gone {
                    caller_gone = true;
                    debug!("prestart caller went away; the users not yet started are dropped");
                }
            }
        }
        info!(environment = %environment, finished, elapsed_ms = started.elapsed().as_millis() as u64, "prestart done");
    }

    /// Places `user` as a login would; the agent's name and endpoint, or why not.
    fn place(&self, user: &str, environment: &str) -> Result<(String, String), String> {
        self.registry
            .place_with(
                user,
                environment,
                &self.catalogue.gpu_demand(environment),
                Instant::now(),
            )
            .map(|placed| (placed.agent, placed.endpoint))
            .map_err(|e| self.catalogue.suggest(e, user).to_string())
    }

    /// One user: waits for its agent's queue, unless the caller went away, then
    /// ensures the container.
    async fn one(
        self: Arc<Self>,
        user: String,
        environment: Arc<str>,
        queue: Arc<Semaphore>,
        tx: mpsc::Sender<pb::PrestartEvent>,
    ) -> Option<pb::PrestartResult> {
        let permit = tokio::select! {
            permit = queue.acquire_owned() => permit.ok(),
            _ = tx.closed() => None,
        };
        let Some(_permit) = permit.filter(|_| !tx.is_closed()) else {
            labssh_telemetry::metrics::prestart(summary::CANCELLED);
            return None;
        };
        // Placed again now: the first placement may have expired while this
        // user waited its turn behind a long queue.
        let (agent, endpoint) = match self.place(&user, &environment) {
            Ok(placed) => placed,
            Err(message) => return Some(result(&user, "", Outcome::Failed, message)),
        };
        let outcome = self.ensure(&agent, &endpoint, &user, &environment).await;
        let (outcome, message) = match outcome {
            Ok(outcome) => (outcome, String::new()),
            Err(message) => (Outcome::Failed, message),
        };
        Some(result(&user, &agent, outcome, message))
    }

    async fn ensure(
        &self,
        agent: &str,
        endpoint: &str,
        user: &str,
        environment: &str,
    ) -> Result<Outcome, String> {
        let mut client = self.agents.client(agent, endpoint)?;
        let request = pb::EnsureRequest {
            user: user.to_string(),
            environment: environment.to_string(),
            prestart: true,
        };
        let reply = tokio::time::timeout(ENSURE_TIMEOUT, client.ensure(request))
            .await
            .map_err(|_| format!("agent {agent} did not answer within {ENSURE_TIMEOUT:?}"))?
            .map_err(|status| {
                // A status made on this side (its source the connection's error)
                // means the agent was never reached; one from the agent says why.
                if std::error::Error::source(&status).is_some() {
                    format!(
                        "agent {agent} at {endpoint} is unreachable: {}",
                        status.message()
                    )
                } else {
                    status.message().to_string()
                }
            })?
            .into_inner();
        Ok(match (reply.created, reply.started) {
            (true, _) => Outcome::Created,
            (false, true) => Outcome::Started,
            (false, false) => Outcome::Already,
        })
    }
}

fn result(user: &str, agent: &str, outcome: Outcome, message: String) -> pb::PrestartResult {
    pb::PrestartResult {
        user: user.to_string(),
        agent: agent.to_string(),
        outcome: outcome.into(),
        message,
    }
}

/// Counts and sends one result; false once the caller has gone away.
async fn send(tx: &mpsc::Sender<pb::PrestartEvent>, result: pb::PrestartResult) -> bool {
    labssh_telemetry::metrics::prestart(summary::outcome_label(result.outcome()));
    if result.outcome() == Outcome::Failed {
        debug!(user = %result.user, agent = %result.agent, "prestart failed: {}", result.message);
    }
    tx.send(pb::PrestartEvent {
        event: Some(pb::prestart_event::Event::Result(result)),
    })
    .await
    .is_ok()
}
