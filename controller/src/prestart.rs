//! `Controller.Prestart`: a class's containers created and started before it
//! begins.
//!
//! The users (the request's, plus a group's members from the users file) are
//! deduplicated in the order given; each is placed as a login is (the
//! registry's placement: sticky to an existing container, pending until the
//! agent reports it, so a burst does not overfill an agent) and its agent's
//! `Ensure` is called with `prestart` set, at most `concurrency` at a time per
//! agent. Each Ensure carries the user's identity from the users file (groups,
//! uid, gid), as a login would: a user the environment's `allowed_groups` leave
//! out, or with no uid for an environment with `uid = "ldap"`, fails before
//! anything is placed. A user that fails (a malformed name, no agent, the agent's error) is
//! one FAILED result; the rest go on. When the receiver of the events goes away
//! (the client disconnected), users not yet started are dropped; Ensures in
//! flight finish, so no container is left half-made.

mod agents;
pub mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::members::{accounts, group_members, Account, MembersError};
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
    /// The users file's accounts, read when the environment needs identities
    /// (`allowed_groups`, `uid = "ldap"`); `None` otherwise or without a file.
    pub accounts: Option<Arc<BTreeMap<String, Account>>>,
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
    /// The controller's clients to agents (shared with operators' container actions).
    pub fn agents(&self) -> &AgentClients {
        &self.agents
    }

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
        let needs_identity = self
            .catalogue
            .environment(&environment)
            .is_some_and(needs_identity);
        let accounts = match (&self.users_file, needs_identity) {
            (Some(path), true) => Some(Arc::new(accounts(path)?)),
            _ => None,
        };
        Ok(Plan {
            environment,
            users,
            concurrency,
            accounts,
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
            let identity = match self.identity(&plan.accounts, &user, &environment) {
                Ok(identity) => identity,
                Err(message) => {
                    if !send(&tx, failed("", message)).await {
                        break;
                    }
                    continue;
                }
            };
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
                    jobs.spawn(self.clone().one(
                        user,
                        environment.clone(),
                        identity,
                        queue,
                        tx.clone(),
                    ));
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
            .map_err(|e| self.catalogue.suggest(e, user, None).to_string())
    }

    /// The identity `user`'s Ensure carries, from `accounts`; why not, for an
    /// environment that needs one the user cannot have.
    fn identity(
        &self,
        accounts: &Option<Arc<BTreeMap<String, Account>>>,
        user: &str,
        environment: &str,
    ) -> Result<Option<pb::Identity>, String> {
        let Some(env) = self.catalogue.environment(environment) else {
            return Ok(None);
        };
        if !needs_identity(env) {
            return Ok(None);
        }
        let Some(accounts) = accounts else {
            return Err(format!(
                "environment '{environment}' needs the user's groups or uid, and the controller has no users_file to read them from"
            ));
        };
        let Some(account) = accounts.get(user) else {
            let file = self
                .users_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(format!(
                "not in the users file {file}: the controller cannot tell their groups or uid for environment '{environment}' (a directory account is started at its first login)"
            ));
        };
        let identity = account.identity();
        check_identity(env, &identity)?;
        Ok(Some(identity))
    }

    /// One user: waits for its agent's queue, unless the caller went away, then
    /// ensures the container.
    async fn one(
        self: Arc<Self>,
        user: String,
        environment: Arc<str>,
        identity: Option<pb::Identity>,
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
        let outcome = self
            .ensure(&agent, &endpoint, (&user, &environment), identity)
            .await;
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
        (user, environment): (&str, &str),
        identity: Option<pb::Identity>,
    ) -> Result<Outcome, String> {
        let mut client = self.agents.client(agent, endpoint)?;
        let request = pb::EnsureRequest {
            user: user.to_string(),
            environment: environment.to_string(),
            prestart: true,
            identity,
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

/// Whether starting `env` for someone needs their identity: it is restricted
/// to groups, or its uid or gid come from the identity.
fn needs_identity(env: &pb::Environment) -> bool {
    !env.allowed_groups.is_empty() || env.uid_from_identity || env.gid_from_identity
}

/// Why `identity` cannot have a container of `env`, for the operator.
fn check_identity(env: &pb::Environment, identity: &pb::Identity) -> Result<(), String> {
    if !labssh_proto::groups::allows(env, Some(identity)) {
        let theirs = match identity.groups.is_empty() {
            true => "none".to_string(),
            false => identity.groups.join(", "),
        };
        return Err(format!(
            "not allowed: environment '{}' is for the groups {}; theirs: {theirs}",
            env.name,
            env.allowed_groups.join(", ")
        ));
    }
    for (from_identity, id, what) in [
        (env.uid_from_identity, identity.uid, "uid"),
        (env.gid_from_identity, identity.gid, "gid"),
    ] {
        if from_identity && id.is_none() {
            return Err(format!(
                "environment '{}' takes the {what} from the account, and theirs in the users file has none (add {what} = NUMBER)",
                env.name
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvironmentConfig;

    /// A prestarter over `default`, `cs101env` (cs101 only) and `nfs` (uid from
    /// the identity), with a users file of alice (cs101, uid 20001), bob (no
    /// groups, uid 20002) and carol (cs101, no uid).
    fn prestarter(dir: &std::path::Path, with_file: bool) -> Prestarter {
        let path = dir.join("users.toml");
        std::fs::write(
            &path,
            "[users.alice]\ngroups = [\"cs101\"]\nuid = 20001\ngid = 20000\n\
             [users.bob]\nuid = 20002\ngid = 20000\n\
             [users.carol]\ngroups = [\"cs101\"]\n",
        )
        .unwrap();
        let mut config = Config::default();
        if with_file {
            config.users_file = path;
        }
        config.environments.insert(
            "cs101env".into(),
            EnvironmentConfig {
                image: "labssh/busybox".into(),
                allowed_groups: vec!["cs101".into()],
                ..EnvironmentConfig::default()
            },
        );
        config.environments.insert(
            "nfs".into(),
            EnvironmentConfig {
                image: "labssh/busybox".into(),
                uid: crate::config::IdSetting::FromIdentity,
                ..EnvironmentConfig::default()
            },
        );
        config.validate().unwrap();
        let registry = Arc::new(Registry::new(&config));
        let catalogue = Arc::new(Catalogue::new(&config));
        Prestarter::new(&config, registry, catalogue)
    }

    fn request(environment: &str, users: &[&str]) -> pb::PrestartRequest {
        pb::PrestartRequest {
            environment: environment.into(),
            users: users.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        }
    }

    /// What each user's Ensure would carry, or why they fail.
    fn identities(p: &Prestarter, environment: &str) -> Vec<Result<Option<pb::Identity>, String>> {
        let plan = p
            .plan(&request(environment, &["alice", "bob", "carol", "dave"]))
            .unwrap();
        plan.users
            .iter()
            .map(|u| p.identity(&plan.accounts, u, &plan.environment))
            .collect()
    }

    #[test]
    fn allowed_groups_fail_the_users_they_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = prestarter(dir.path(), true);
        let got = identities(&p, "cs101env");
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().groups, ["cs101"]);
        assert_eq!(
            got[1].as_ref().unwrap_err(),
            "not allowed: environment 'cs101env' is for the groups cs101; theirs: none"
        );
        assert!(got[2].is_ok(), "carol is in cs101: {:?}", got[2]);
        let dave = got[3].as_ref().unwrap_err();
        assert!(dave.starts_with("not in the users file "), "{dave}");
        // An unrestricted environment with fixed ids needs no identity at all.
        assert!(identities(&p, "").iter().all(|r| r == &Ok(None)));
    }

    #[test]
    fn uid_from_the_identity_comes_from_the_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = prestarter(dir.path(), true);
        let got = identities(&p, "nfs");
        let alice = got[0].clone().unwrap().unwrap();
        assert_eq!((alice.uid, alice.gid), (Some(20001), Some(20000)));
        let bob = got[1].clone().unwrap().unwrap();
        assert_eq!(bob.uid, Some(20002));
        assert_eq!(
            got[2].as_ref().unwrap_err(),
            "environment 'nfs' takes the uid from the account, and theirs in the users file has none (add uid = NUMBER)"
        );
        assert!(got[3].is_err());
    }

    #[test]
    fn without_a_users_file_restricted_environments_fail_everyone_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = prestarter(dir.path(), false);
        for result in identities(&p, "cs101env") {
            assert_eq!(
                result.unwrap_err(),
                "environment 'cs101env' needs the user's groups or uid, and the controller has no users_file to read them from"
            );
        }
    }
}
