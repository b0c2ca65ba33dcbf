//! Students' containers across every agent, for operators (`labssh containers`,
//! `labssh container …`) and for a student's self-service login: listed from the
//! inventories the agents report, and acted on by relaying the action to the agent
//! that holds the container.

use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_proto::roles::{Peer, Role};
use pb::ContainerVerb as Verb;
use tonic::{Code, Status};

use crate::catalogue::Catalogue;
use crate::prestart::AgentClients;
use crate::registry::Registry;

/// How long an action may take on the agent: a reset waits for the sessions to let
/// go, removes the container and makes it again (a cold start can queue).
const ACTION_TIMEOUT: Duration = Duration::from_secs(180);

/// The containers `request` asks for, sorted by user, environment and agent.
pub fn list(
    registry: &Registry,
    request: &pb::ListContainersRequest,
    now: Instant,
) -> pb::ListContainersReply {
    let state = pb::ContainerState::try_from(request.state).unwrap_or_default();
    let mut containers: Vec<pb::PlacedContainer> = registry
        .agents(now)
        .into_iter()
        .filter(|a| request.agent.is_empty() || a.name == request.agent)
        .flat_map(|agent| {
            let inventory = agent.status.map(|s| s.inventory).unwrap_or_default();
            let (name, live) = (agent.name, agent.live);
            inventory
                .into_iter()
                .map(move |container| pb::PlacedContainer {
                    agent: name.clone(),
                    container: Some(container),
                    live,
                })
        })
        .filter(|placed| {
            let c = placed.container.as_ref();
            let user = c.map_or("", |c| c.user.as_str());
            (request.user.is_empty() || user == request.user)
                && (state == pb::ContainerState::Unspecified || c.map(|c| c.state()) == Some(state))
        })
        .collect();
    containers.sort_by(|a, b| {
        let key = |p: &pb::PlacedContainer| {
            let c = p.container.clone().unwrap_or_default();
            (c.user, c.environment, p.agent.clone())
        };
        key(a).cmp(&key(b))
    });
    pb::ListContainersReply { containers }
}

/// Who is asking, as the agent and the student's line are told: a proxy asks only
/// for its student's self-service; without mTLS a request saying so is taken at its
/// word.
pub fn caller(peer: Option<&Peer>, request: &pb::ContainerActionRequest) -> String {
    match peer {
        Some(peer) if peer.role == Role::Proxy => "student".to_owned(),
        Some(peer) => peer.to_string(),
        None if request.by == "student" => "student".to_owned(),
        None => "an operator (mTLS off)".to_owned(),
    }
}

/// Relays `request` (from `by`) to the agent that holds the container.
pub async fn act(
    registry: &Registry,
    catalogue: &Catalogue,
    agents: &AgentClients,
    mut request: pb::ContainerActionRequest,
    by: String,
) -> Result<pb::ContainerActionReply, Status> {
    let verb = Verb::try_from(request.verb).unwrap_or(Verb::Unspecified);
    if verb == Verb::Unspecified {
        return Err(Status::invalid_argument(
            "name an action: stop, start, reset or remove",
        ));
    }
    if by == "student" && verb == Verb::Remove {
        return Err(Status::permission_denied(
            "students may stop, start or reset their containers; removing one is for operators",
        ));
    }
    if request.environment.is_empty() {
        request.environment = catalogue.default_environment().to_owned();
    }
    let user = request.user.clone();
    let environment = request.environment.clone();
    let now = Instant::now();
    let holders: Vec<pb::AgentInfo> = registry
        .agents(now)
        .into_iter()
        .filter(|agent| {
            let inventory = agent.status.as_ref().map(|s| s.inventory.as_slice());
            inventory
                .unwrap_or_default()
                .iter()
                .any(|c| c.user == user && c.environment == environment)
        })
        .collect();
    let agent = match holders.iter().find(|a| a.live).or(holders.first()) {
        Some(agent) if agent.live => agent,
        Some(agent) => {
            return Err(Status::unavailable(format!(
                "{user}+{environment} is on agent {}, which is down; try again when it is back",
                agent.name
            )))
        }
        None if catalogue.environment(&environment).is_none() => {
            return Err(Status::invalid_argument(format!(
                "{user} has no container of '{environment}': there is no such environment"
            )))
        }
        None => {
            return Err(Status::not_found(format!(
                "{user} has no container of '{environment}' on any agent"
            )))
        }
    };
    request.by = by.clone();
    let mut client = agents
        .client(&agent.name, &agent.endpoint)
        .map_err(Status::unavailable)?;
    let mut call = tonic::Request::new(request);
    call.set_timeout(ACTION_TIMEOUT);
    let reply = client.act(call).await.map_err(|status| {
        let code = match status.code() {
            // The agent's unreachability is not the operator's mistake.
            Code::Unknown | Code::Internal => Code::Unavailable,
            code => code,
        };
        Status::new(code, format!("agent {}: {}", agent.name, status.message()))
    })?;
    let reply = reply.into_inner();
    tracing::info!(
        user = %user,
        environment = %environment,
        agent = %agent.name,
        verb = verb.as_str_name(),
        %by,
        sessions_ended = reply.sessions_ended,
        "container action"
    );
    Ok(reply)
}
