//! The environment catalogue, as last received from the controller.

use std::collections::HashMap;
use std::sync::RwLock;

use labssh_proto::pb;

/// Environments by name; replaced whole on every Welcome.
#[derive(Default)]
pub struct Catalogue {
    /// `None` until the first Welcome, so errors can say the controller was never reached.
    environments: RwLock<Option<HashMap<String, pb::Environment>>>,
    /// Becomes true with the first Welcome, for tasks that wait for it.
    received: tokio::sync::watch::Sender<bool>,
}

impl Catalogue {
    /// Replaces the catalogue with the controller's latest list.
    pub fn replace(&self, environments: Vec<pb::Environment>) {
        let map = environments
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        *self.environments.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
        self.received.send_replace(true);
    }

    /// Waits until the controller's catalogue has arrived (at once if it has).
    pub async fn received(&self) {
        let mut received = self.received.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = received.wait_for(|r| *r).await;
    }

    /// Every environment (none before the first Welcome).
    pub fn all(&self) -> Vec<pb::Environment> {
        let environments = self.environments.read().unwrap_or_else(|e| e.into_inner());
        environments
            .as_ref()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The named environment.
    pub fn get(&self, name: &str) -> Result<pb::Environment, CatalogueError> {
        let environments = self.environments.read().unwrap_or_else(|e| e.into_inner());
        match environments.as_ref() {
            None => Err(CatalogueError::NotReceived),
            Some(map) => map
                .get(name)
                .cloned()
                .ok_or_else(|| CatalogueError::Unknown(name.to_owned())),
        }
    }
}

/// Why an environment could not be looked up; the message is for the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    /// The controller has not sent its catalogue since the agent started.
    #[error("this agent has not received the environment catalogue from the controller yet")]
    NotReceived,
    /// No environment of that name.
    #[error("unknown environment '{0}'")]
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let c = Catalogue::default();
        assert!(c
            .get("default")
            .unwrap_err()
            .to_string()
            .contains("not received"));
        c.replace(vec![pb::Environment {
            name: "default".into(),
            ..Default::default()
        }]);
        assert_eq!(c.get("default").unwrap().name, "default");
        assert_eq!(
            c.get("gpu").unwrap_err().to_string(),
            "unknown environment 'gpu'"
        );
        c.replace(Vec::new());
        assert!(c.get("default").is_err());
    }
}
