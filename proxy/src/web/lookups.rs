//! A replica's short memory of service lookups: a page of a student's Jupyter loads
//! dozens of files, and each request would otherwise ask the controller again
//! for the same name. An answer is kept for [`TTL`] under the whole request (the
//! viewer, their groups, the owner and the name), so it is only ever given back to
//! the same question; only answers that found something are kept (a service that
//! just started listening is not hidden), never errors, and at most [`MAX`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labssh_proto::pb;
use prost::Message;

/// How long an answer is given again: within discovery's own delay (the registry
/// itself is up to `services_interval_ms`, 2 s by default, behind).
pub const TTL: Duration = Duration::from_secs(2);
/// At most this many answers are kept (a few hundred bytes each).
pub const MAX: usize = 10_000;

/// An answer and when it was given, by its request's bytes.
type Kept = HashMap<Vec<u8>, (Instant, Vec<pb::ServiceInfo>)>;

/// Answers by their request's bytes.
pub struct Lookups {
    ttl: Duration,
    max: usize,
    kept: Mutex<Kept>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups::new(TTL, MAX)
    }
}

impl Lookups {
    /// Answers kept `ttl`, at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> Lookups {
        Lookups {
            ttl,
            max,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to `request` given less than the TTL ago, if any.
    pub fn get(&self, request: &pb::ListServicesRequest) -> Option<Vec<pb::ServiceInfo>> {
        let key = request.encode_to_vec();
        let kept = self.kept.lock().expect("lock");
        kept.get(&key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, services)| services.clone())
    }

    /// Keeps `services`, the answer to `request`, if it found any.
    pub fn put(&self, request: &pb::ListServicesRequest, services: &[pb::ServiceInfo]) {
        if services.is_empty() {
            return;
        }
        let mut kept = self.kept.lock().expect("lock");
        if kept.len() >= self.max {
            let ttl = self.ttl;
            kept.retain(|_, (at, _)| at.elapsed() < ttl);
            if kept.len() >= self.max {
                kept.clear();
            }
        }
        kept.insert(request.encode_to_vec(), (Instant::now(), services.to_vec()));
    }

    /// How many answers are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.kept.lock().expect("lock").len()
    }

    /// Whether none is.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(viewer: &str, groups: &[&str], name: &str) -> pb::ListServicesRequest {
        pb::ListServicesRequest {
            viewer: viewer.into(),
            viewer_identity: Some(pb::Identity {
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            }),
            name: name.into(),
            ..Default::default()
        }
    }

    fn service(name: &str) -> pb::ServiceInfo {
        pb::ServiceInfo {
            name: name.into(),
            port: 8888,
            ..Default::default()
        }
    }

    #[test]
    fn an_answer_goes_only_to_the_same_question_and_only_for_its_ttl() {
        let lookups = Lookups::new(Duration::from_millis(200), 100);
        let alice = asked("alice", &[], "8888-alice");
        lookups.put(&alice, &[service("8888-alice")]);
        assert_eq!(lookups.get(&alice).unwrap()[0].name, "8888-alice");
        // Another viewer, or the same viewer with other groups, asks anew.
        assert!(lookups.get(&asked("bob", &[], "8888-alice")).is_none());
        assert!(lookups
            .get(&asked("alice", &["cs101-tas"], "8888-alice"))
            .is_none());
        assert!(lookups.get(&asked("alice", &[], "8889-alice")).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(lookups.get(&alice).is_none(), "kept past its TTL");
    }

    #[test]
    fn nothing_found_is_not_kept_and_the_count_is_bounded() {
        let lookups = Lookups::new(Duration::from_secs(60), 10);
        lookups.put(&asked("alice", &[], "9999-alice"), &[]);
        assert!(lookups.is_empty());
        for i in 0..25 {
            let name = format!("{i}-alice");
            lookups.put(&asked("alice", &[], &name), &[service(&name)]);
            assert!(lookups.len() <= 10, "{} kept", lookups.len());
        }
        let last = asked("alice", &[], "24-alice");
        assert!(lookups.get(&last).is_some(), "the newest answer is kept");
    }
}
