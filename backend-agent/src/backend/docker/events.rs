//! Docker's events stream, watched for as long as the backend lives: every change to
//! a container (started, stopped, died, killed, paused, renamed, updated, removed,
//! connected to or disconnected from a network...) or to an image (by the reference
//! or id the event names) makes what [`Known`] kept of it stale. While the stream is down nothing is known, so every
//! question goes to Docker; it is opened again with a growing pause, asking for the
//! events since the moment knowledge may be kept again, so none falls in the gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::errors::docker_message;
use super::known::Known;

/// First pause before opening a lost stream again; doubles up to the cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between attempts: knowledge is missing (every login asks Docker)
/// for at most this long after Docker comes back.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Container actions that change what an inspect of it says; `exec_*`, `attach`,
/// `top`, archive copies and health checks do not.
const CONTAINER_ACTIONS: [&str; 12] = [
    "create", "start", "restart", "stop", "die", "kill", "oom", "pause", "unpause", "destroy",
    "rename", "update",
];
/// Network actions that change a container's networks.
const NETWORK_ACTIONS: [&str; 2] = ["connect", "disconnect"];
/// Image actions that may change which image a reference names.
const IMAGE_ACTIONS: [&str; 6] = ["pull", "tag", "untag", "delete", "import", "load"];

/// Watches Docker's events into `known` until the task is dropped.
pub async fn watch(docker: Docker, known: Arc<Known>) {
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([
        ("type", vec!["container", "network", "image"]),
        (
            "event",
            CONTAINER_ACTIONS
                .iter()
                .chain(&NETWORK_ACTIONS)
                .chain(&IMAGE_ACTIONS)
                .copied()
                .collect(),
        ),
    ]);
    let mut pause = BACKOFF_START;
    loop {
        // Events from this moment on are asked for before knowledge may be kept again.
        let since = SystemTime::now();
        known.set_connected(true);
        let opened = Instant::now();
        let options = EventsOptionsBuilder::new()
            .since(&stamp(since))
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));
        let why = loop {
            match events.next().await {
                Some(Ok(event)) => apply(&known, &event),
                Some(Err(e)) => break docker_message(&e),
                None => break "Docker ended it".to_owned(),
            }
        };
        known.set_connected(false);
        if opened.elapsed() > BACKOFF_MAX {
            pause = BACKOFF_START;
        }
        tracing::warn!(error = %why, retry_ms = pause.as_millis() as u64, "lost Docker's events stream; asking Docker about every container until it is back");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

/// Makes what `event` changed stale.
fn apply(known: &Known, event: &EventMessage) {
    let at = time_of(event);
    let action = event.action.as_deref().unwrap_or_default();
    let actor = event.actor.as_ref();
    match event.typ {
        Some(EventMessageTypeEnum::CONTAINER) if CONTAINER_ACTIONS.contains(&action) => {
            if let Some(id) = actor.and_then(|a| a.id.as_deref()) {
                known.container_event(id, at);
            }
        }
        Some(EventMessageTypeEnum::NETWORK) if NETWORK_ACTIONS.contains(&action) => {
            let attributes = actor.and_then(|a| a.attributes.as_ref());
            if let Some(id) = attributes.and_then(|a| a.get("container")) {
                known.container_event(id, at);
            }
        }
        Some(EventMessageTypeEnum::IMAGE) if IMAGE_ACTIONS.contains(&action) => {
            let id = actor.and_then(|a| a.id.as_deref());
            let attributes = actor.and_then(|a| a.attributes.as_ref());
            let name = attributes.and_then(|a| a.get("name")).map(String::as_str);
            let names: Vec<&str> = id.into_iter().chain(name).collect();
            known.image_event(at, &names);
        }
        _ => {}
    }
}

/// When Docker says the event happened; an event without a time counts as now,
/// the latest it can have been.
fn time_of(event: &EventMessage) -> SystemTime {
    let nanos = event
        .time_nano
        .or_else(|| event.time.map(|s| s.saturating_mul(1_000_000_000)))
        .and_then(|n| u64::try_from(n).ok());
    nanos.map_or_else(SystemTime::now, |n| UNIX_EPOCH + Duration::from_nanos(n))
}

/// Docker's `since`: seconds and nanoseconds since the epoch.
fn stamp(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerInspectResponse, EventActor};

    fn event(typ: EventMessageTypeEnum, action: &str, id: &str, at: SystemTime) -> EventMessage {
        let nanos = at.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(HashMap::from([("container".into(), "c1".into())])),
            }),
            time_nano: Some(nanos),
            ..Default::default()
        }
    }

    #[test]
    fn changes_make_knowledge_stale_and_execs_do_not() {
        let known = Known::default();
        known.set_connected(true);
        let c1 = std::sync::Arc::new(ContainerInspectResponse {
            id: Some("c1".into()),
            ..Default::default()
        });
        known.store(known.ticket(), &c1);
        let now = SystemTime::now() + Duration::from_millis(1);
        apply(
            &known,
            &event(EventMessageTypeEnum::CONTAINER, "exec_start: sh", "c1", now),
        );
        assert!(known.container("c1").is_some());
        apply(
            &known,
            &event(EventMessageTypeEnum::NETWORK, "connect", "net1", now),
        );
        assert!(known.container("c1").is_none());
        known.store(known.ticket(), &c1);
        let later = SystemTime::now() + Duration::from_millis(1);
        apply(
            &known,
            &event(EventMessageTypeEnum::CONTAINER, "die", "c1", later),
        );
        assert!(known.container("c1").is_none());
        assert_eq!(
            stamp(UNIX_EPOCH + Duration::from_nanos(1_500_000_007)),
            "1.500000007"
        );
    }
}
