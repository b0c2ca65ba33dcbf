//! This agent's containers as Docker lists them, for the controller's inventory; the
//! routes and helper directories of containers that are gone are forgotten on the way.

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum};
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::container_spec::{
    parse_ids, LABEL_AGENT, LABEL_ENV, LABEL_GPUS, LABEL_IDS, LABEL_PREFIX, LABEL_SETTINGS,
    LABEL_USER,
};
use super::errors::docker_message;
use super::{helper_container, DockerBackend};
use crate::backend::{BackendError, ContainerInfo, ContainerState, ContainerVersion};

impl DockerBackend {
    /// This agent's containers as Docker summarizes them: stopped ones too if `all`,
    /// only those with the label `with` if given.
    pub(super) async fn list_own(
        &self,
        all: bool,
        with: Option<&str>,
    ) -> Result<Vec<ContainerSummary>, BackendError> {
        // Both labels: agents of two deployments on one Docker engine (or two test
        // labs on one machine) may share a name, but not a prefix.
        let mut labels = vec![
            format!("{LABEL_AGENT}={}", self.agent),
            format!("{LABEL_PREFIX}={}", self.prefix),
        ];
        labels.extend(with.map(str::to_owned));
        let filters = [("label".to_owned(), labels)].into_iter().collect();
        let options = ListContainersOptionsBuilder::new()
            .all(all)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "listing containers",
                message: docker_message(&e),
            })
    }

    /// [`crate::backend::Backend::inventory`] on Docker.
    pub(super) async fn list(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        let list = self.list_own(true, None).await?;
        let ids = list.iter().filter_map(|c| c.id.clone()).collect();
        self.routes.retain(&ids);
        if let Some(setup) = &self.helper {
            let names = list
                .iter()
                .flat_map(|c| c.names.iter().flatten())
                .map(|n| n.trim_start_matches('/').to_owned())
                .collect();
            helper_container::prune_dirs(&self.docker, &setup.dir, &self.prefix, &names).await;
        }
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let state = match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING)
                    | Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Running,
                    Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
                    Some(ContainerSummaryStateEnum::REMOVING) => return None,
                    _ => ContainerState::Stopped,
                };
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                let created = c.created.and_then(|s| u64::try_from(s).ok());
                Some(ContainerInfo {
                    name,
                    user: labels.get(LABEL_USER)?.clone(),
                    environment: labels.get(LABEL_ENV)?.clone(),
                    state,
                    gpus: labels
                        .get(LABEL_GPUS)
                        .map(|ids| {
                            ids.split(',')
                                .filter(|id| !id.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    version: ContainerVersion {
                        image: c.image_id.unwrap_or_default(),
                        settings: labels.get(LABEL_SETTINGS).cloned().unwrap_or_default(),
                    },
                    created: created
                        .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)),
                    ids: labels.get(LABEL_IDS).and_then(|l| parse_ids(l)),
                })
            })
            .collect())
    }
}
