//! What the agent knows of its containers and images without asking Docker: the
//! answers of its own inspects, kept while Docker's events stream (see `events.rs`)
//! says nothing changed them, so a login into a running container asks Docker nothing.
//!
//! Staleness is judged by time, on one clock: Docker stamps each event (`timeNano`)
//! after the change it reports is in force, and the agent and dockerd share the host's
//! clock (the socket is local). An answer is kept as of the moment its request was
//! sent (`asked`); an event stamped before that moment is already reflected in it, one
//! stamped at or after it makes it stale, whether the event arrives before the answer
//! (the answer is then never kept) or after (it is dropped). So the events the agent's
//! own actions cause, stamped before the inspect that follows each action, do not undo
//! what that inspect learnt, and an inspect racing an outside change is never kept.
//!
//! Nothing is known while the events stream is not connected: losing it forgets
//! everything and refuses answers asked before it came back (`epoch`). Between an
//! outside change and its event, what is known is believed only of a running
//! container whose first process is still there ([`believable`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bollard::models::ContainerInspectResponse;

/// How long the time of the latest event of a container is remembered: longer than
/// any inspect can be in flight (bollard's request timeout), after which an answer is
/// not kept anyway.
const EVENT_MEMORY: Duration = Duration::from_secs(2 * super::DOCKER_TIMEOUT_SECS);
/// Event times remembered before the old ones are pruned.
const EVENT_TIMES_PRUNED_AT: usize = 4096;
/// Image events remembered for answers in flight; past this the oldest are dropped,
/// and answers asked before it are not kept.
const IMAGE_EVENTS_KEPT: usize = 1024;

/// Whether what is known of a container may be believed without asking Docker: only
/// that it runs (a stopped one is started, which asks Docker anyway), and only while its
/// first process is still in the container's cgroup (a recycled pid is someone else's):
/// an outside stop or removal leaves it gone before its event arrives. One procfs read,
/// no Docker.
pub fn believable(inspect: &ContainerInspectResponse) -> bool {
    let state = inspect.state.as_ref();
    if state.and_then(|s| s.running) != Some(true) {
        return false;
    }
    let pid = state.and_then(|s| s.pid).filter(|&p| p > 0);
    let id = inspect.id.as_deref().unwrap_or_default();
    let Some(pid) = pid else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|cgroup| id.len() >= 12 && cgroup.contains(id))
}

/// A request about to be sent to Docker, whose answer may be kept.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    /// When it was sent.
    asked: SystemTime,
    /// The events stream's connection it was sent under.
    epoch: u64,
}

/// A container as an inspect saw it.
struct Entry {
    /// Docker's answer, shared with those it is handed to (a login asks for it, and
    /// a copy of the whole answer would cost more than the rest of the lookup).
    inspect: Arc<ContainerInspectResponse>,
    /// When that inspect was sent.
    asked: SystemTime,
}

/// What [`Known`] holds.
#[derive(Default)]
struct Inner {
    /// Whether the events stream is connected: otherwise nothing is kept.
    connected: bool,
    /// Counts the stream's connects and disconnects.
    epoch: u64,
    /// Container id → what was seen of it.
    containers: HashMap<String, Entry>,
    /// Container name (no leading slash) → id, for the entries in `containers`.
    names: HashMap<String, String>,
    /// Container id → time of the latest event about it, for answers in flight.
    events: HashMap<String, SystemTime>,
    /// Image reference ([`normal`]) → (image id, when asked).
    images: HashMap<String, (String, SystemTime)>,
    /// Recent image events, oldest first, for answers in flight.
    image_events: VecDeque<ImageEvent>,
    /// Answers asked before this are not kept: image events after it were dropped.
    image_floor: Option<SystemTime>,
}

/// An image event: when, and the references and ids it names ([`normal`]).
struct ImageEvent {
    at: SystemTime,
    names: Vec<String>,
}

impl ImageEvent {
    /// Whether it may change what `reference` (which named `id`) names.
    fn touches(&self, reference: &str, id: &str) -> bool {
        self.names.iter().any(|n| n == reference || n == id)
    }
}

/// An image reference as Docker's events write it: `busybox` and
/// `docker.io/library/busybox` are `busybox:latest`.
fn normal(reference: &str) -> String {
    let r = reference.strip_prefix("docker.io/").unwrap_or(reference);
    let r = r.strip_prefix("library/").unwrap_or(r);
    let last = r.rsplit('/').next().unwrap_or(r);
    if r.starts_with("sha256:") || r.contains('@') || last.contains(':') {
        r.to_owned()
    } else {
        format!("{r}:latest")
    }
}

/// The agent's knowledge of its containers; every method is quick and never waits.
#[derive(Default)]
pub struct Known {
    /// Everything, under one lock held only for map operations; lives with the backend.
    inner: Mutex<Inner>,
}

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken just before a request whose answer should be kept.
    pub fn ticket(&self) -> Ticket {
        let epoch = self.lock().epoch;
        Ticket {
            asked: SystemTime::now(),
            epoch,
        }
    }

    /// What is known of a container, by id or name.
    pub fn container(&self, container: &str) -> Option<Arc<ContainerInspectResponse>> {
        let inner = self.lock();
        let id = inner
            .names
            .get(container.trim_start_matches('/'))
            .map_or(container, String::as_str);
        inner.containers.get(id).map(|e| Arc::clone(&e.inspect))
    }

    /// Keeps Docker's answer to an inspect sent under `ticket`, unless something
    /// changed the container since.
    pub fn store(&self, ticket: Ticket, inspect: &Arc<ContainerInspectResponse>) {
        let Some(id) = inspect.id.clone() else {
            return;
        };
        let mut inner = self.lock();
        if !inner.keeps(ticket) || inner.events.get(&id).is_some_and(|&at| at >= ticket.asked) {
            return;
        }
        inner.forget(&id);
        if let Some(name) = inspect.name.as_deref() {
            let name = name.trim_start_matches('/').to_owned();
            inner.names.insert(name, id.clone());
        }
        let entry = Entry {
            inspect: Arc::clone(inspect),
            asked: ticket.asked,
        };
        inner.containers.insert(id, entry);
    }

    /// Forgets a container the agent itself is changing (by id or name).
    pub fn forget(&self, container: &str) {
        let mut inner = self.lock();
        let id = inner
            .names
            .get(container.trim_start_matches('/'))
            .cloned()
            .unwrap_or_else(|| container.to_owned());
        inner.forget(&id);
    }

    /// Docker says container `id` changed at `at`.
    pub fn container_event(&self, id: &str, at: SystemTime) {
        let mut inner = self.lock();
        let latest = inner.events.entry(id.to_owned()).or_insert(at);
        *latest = (*latest).max(at);
        if inner.containers.get(id).is_some_and(|e| e.asked <= at) {
            inner.forget(id);
        }
        if inner.events.len() > EVENT_TIMES_PRUNED_AT {
            let now = SystemTime::now();
            inner.events.retain(|_, at| {
                now.duration_since(*at)
                    .map_or(true, |age| age < EVENT_MEMORY)
            });
        }
    }

    /// The id of the image `reference` names, if known.
    pub fn image(&self, reference: &str) -> Option<String> {
        let images = &self.lock().images;
        images.get(&normal(reference)).map(|(id, _)| id.clone())
    }

    /// Keeps the id `reference` names, asked under `ticket`.
    pub fn store_image(&self, ticket: Ticket, reference: &str, id: &str) {
        let reference = normal(reference);
        let mut inner = self.lock();
        let changed = inner
            .image_events
            .iter()
            .any(|e| e.at >= ticket.asked && e.touches(&reference, id));
        if !inner.keeps(ticket) || inner.image_floor >= Some(ticket.asked) || changed {
            return;
        }
        let entry = (id.to_owned(), ticket.asked);
        inner.images.insert(reference, entry);
    }

    /// Docker says an image changed at `at` (pulled, tagged, untagged, removed...);
    /// `names` are the references and ids the event gives.
    pub fn image_event(&self, at: SystemTime, names: &[&str]) {
        let event = ImageEvent {
            at,
            names: names.iter().map(|n| normal(n)).collect(),
        };
        let mut inner = self.lock();
        inner
            .images
            .retain(|reference, (id, asked)| *asked > at || !event.touches(reference, id));
        inner.image_events.push_back(event);
        let now = SystemTime::now();
        let old = |e: &ImageEvent| now.duration_since(e.at).is_ok_and(|age| age > EVENT_MEMORY);
        while inner.image_events.front().is_some_and(old) {
            inner.image_events.pop_front();
        }
        while inner.image_events.len() > IMAGE_EVENTS_KEPT {
            let dropped = inner.image_events.pop_front().map(|e| e.at);
            inner.image_floor = inner.image_floor.max(dropped);
        }
    }

    /// The events stream is connected (`true`) or lost: either way, everything known
    /// so far is forgotten and answers in flight are not kept.
    pub fn set_connected(&self, connected: bool) {
        let mut inner = self.lock();
        let epoch = inner.epoch + 1;
        *inner = Inner {
            connected,
            epoch,
            ..Inner::default()
        };
    }
}

impl Inner {
    /// Whether an answer asked under `ticket` may be kept at all.
    fn keeps(&self, ticket: Ticket) -> bool {
        let fresh = SystemTime::now()
            .duration_since(ticket.asked)
            .is_ok_and(|age| age < EVENT_MEMORY);
        self.connected && ticket.epoch == self.epoch && fresh
    }

    fn forget(&mut self, id: &str) {
        if self.containers.remove(id).is_some() {
            self.names.retain(|_, known| known != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str) -> Arc<ContainerInspectResponse> {
        Arc::new(ContainerInspectResponse {
            id: Some(id.into()),
            name: Some(format!("/{name}")),
            ..Default::default()
        })
    }

    fn connected() -> Known {
        let known = Known::default();
        known.set_connected(true);
        known
    }

    #[test]
    fn an_answer_is_known_by_id_and_name_until_an_event_after_it() {
        let known = connected();
        let ticket = known.ticket();
        known.store(ticket, &container("c1", "lab-a.x"));
        assert!(known.container("c1").is_some());
        assert!(known.container("lab-a.x").is_some());
        // The event of the agent's own action before the inspect changes nothing...
        known.container_event("c1", ticket.asked - Duration::from_nanos(1));
        assert!(known.container("lab-a.x").is_some());
        // ...one after it does.
        known.container_event("c1", SystemTime::now());
        assert!(known.container("c1").is_none());
        assert!(known.container("lab-a.x").is_none());
    }

    #[test]
    fn an_answer_asked_before_an_event_it_arrives_after_is_not_kept() {
        let known = connected();
        let ticket = known.ticket();
        known.container_event("c1", SystemTime::now());
        known.store(ticket, &container("c1", "lab-a.x"));
        assert!(known.container("lab-a.x").is_none());
        // Another container's event is no reason.
        let ticket = known.ticket();
        known.container_event("c2", SystemTime::now());
        known.store(ticket, &container("c1", "lab-a.x"));
        assert!(known.container("lab-a.x").is_some());
    }

    #[test]
    fn nothing_is_kept_without_the_events_stream() {
        let known = Known::default();
        known.store(known.ticket(), &container("c1", "lab-a.x"));
        assert!(known.container("c1").is_none());
        known.set_connected(true);
        let ticket = known.ticket();
        known.store(ticket, &container("c1", "lab-a.x"));
        assert!(known.container("c1").is_some());
        known.set_connected(false);
        assert!(known.container("c1").is_none());
        known.set_connected(true);
        // Asked before the stream was lost and found again: not kept.
        known.store(ticket, &container("c1", "lab-a.x"));
        assert!(known.container("c1").is_none());
    }

    #[test]
    fn the_agents_own_changes_forget_and_renames_move_names() {
        let known = connected();
        known.store(known.ticket(), &container("c1", "lab-a.x"));
        known.forget("lab-a.x");
        assert!(known.container("c1").is_none());
        known.store(known.ticket(), &container("c1", "lab-a.x"));
        known.store(known.ticket(), &container("c1", "lab-a.y"));
        assert!(known.container("lab-a.x").is_none());
        assert!(known.container("lab-a.y").is_some());
    }

    #[test]
    fn image_ids_are_kept_until_an_event_about_them() {
        let known = connected();
        let ticket = known.ticket();
        known.store_image(ticket, "docker.io/library/img", "sha256:a");
        assert_eq!(known.image("img:latest").as_deref(), Some("sha256:a"));
        // Another image imported and tagged.
        known.image_event(SystemTime::now(), &["sha256:b", "other:1"]);
        assert_eq!(known.image("img").as_deref(), Some("sha256:a"));
        // The reference tagged anew...
        known.image_event(SystemTime::now(), &["sha256:c", "img:latest"]);
        assert_eq!(known.image("img"), None);
        // ...and an answer asked before that is not kept.
        known.store_image(ticket, "img", "sha256:a");
        assert_eq!(known.image("img"), None);
        // An untag names the image by its id only.
        known.store_image(known.ticket(), "img", "sha256:c");
        known.image_event(SystemTime::now(), &["sha256:c", "sha256:c"]);
        assert_eq!(known.image("img"), None);
        assert_eq!(normal("localhost:5000/lab"), "localhost:5000/lab:latest");
        assert_eq!(normal("lab@sha256:d"), "lab@sha256:d");
    }
}
