//! The environment catalogue as served to agents and proxies.

use labssh_proto::pb;

use crate::config::Config;
use crate::placement::{GpuDemand, PlaceError};

/// The environments students can choose, in wire form, built once from the
/// configuration.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Every environment, sorted by name.
    environments: Vec<pb::Environment>,
    /// Name of the environment used when a login names none.
    default_environment: String,
}

impl Catalogue {
    /// The catalogue of a validated configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            // BTreeMap iteration keeps them sorted by name.
            environments: config
                .environments
                .iter()
                .map(|(name, env)| env.to_proto(name))
                .collect(),
            default_environment: config.default_environment.clone(),
        }
    }

    /// Every environment, sorted by name.
    pub fn environments(&self) -> &[pb::Environment] {
        &self.environments
    }

    /// The environment used when a login names none.
    pub fn default_environment(&self) -> &str {
        &self.default_environment
    }

    /// The GPUs a container of `environment` takes.
    pub fn gpu_demand(&self, environment: &str) -> GpuDemand {
        let env = self.environments.iter().find(|e| e.name == environment);
        GpuDemand::of(env.and_then(|e| e.gpus.as_ref()))
    }

    /// `error` with a login `user` could use instead when no GPUs are free: the
    /// default environment if it takes none, else the first that takes none.
    pub fn suggest(&self, error: PlaceError, user: &str) -> PlaceError {
        let PlaceError::NoGpusFree {
            total,
            free,
            needed,
            ..
        } = error
        else {
            return error;
        };
        let without_gpus = |e: &&pb::Environment| e.gpus.is_none();
        let instead = self
            .environments
            .iter()
            .filter(without_gpus)
            .find(|e| e.name == self.default_environment)
            .or_else(|| self.environments.iter().find(without_gpus));
        PlaceError::NoGpusFree {
            total,
            free,
            needed,
            suggestion: instead
                .map(|e| format!("{user}+{}", e.name))
                .unwrap_or_default(),
        }
    }

    /// The environment a request means: the default for an empty name, the
    /// named one if it exists, otherwise an error listing the choices.
    pub fn resolve<'a>(&'a self, requested: &str) -> Result<&'a str, PlaceError> {
        let wanted = if requested.is_empty() {
            self.default_environment.as_str()
        } else {
            requested
        };
        self.environments
            .iter()
            .find(|env| env.name == wanted)
            .map(|env| env.name.as_str())
            .ok_or_else(|| PlaceError::UnknownEnvironment {
                requested: requested.to_string(),
                available: self.environments.iter().map(|e| e.name.clone()).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvironmentConfig;

    fn catalogue() -> Catalogue {
        let mut config = Config::default();
        config.environments.insert(
            "gpu".to_string(),
            EnvironmentConfig {
                image: "labssh/cuda:12".to_string(),
                ..EnvironmentConfig::default()
            },
        );
        Catalogue::new(&config)
    }

    #[test]
    fn resolves_default_and_named() {
        let catalogue = catalogue();
        assert_eq!(catalogue.resolve("").unwrap(), "default");
        assert_eq!(catalogue.resolve("gpu").unwrap(), "gpu");
        let names: Vec<_> = catalogue.environments().iter().map(|e| &e.name).collect();
        assert_eq!(names, ["default", "gpu"]);
    }

    #[test]
    fn gpu_refusals_suggest_an_environment_without_gpus() {
        let mut config = Config::default();
        config.environments.insert(
            "gpu".to_string(),
            EnvironmentConfig {
                image: "labssh/cuda:12".to_string(),
                gpus: Some(crate::config::GpusConfig::Count(1)),
                ..EnvironmentConfig::default()
            },
        );
        let catalogue = Catalogue::new(&config);
        assert_eq!(catalogue.gpu_demand("gpu"), GpuDemand::Count(1));
        assert_eq!(catalogue.gpu_demand("default"), GpuDemand::None);
        let busy = PlaceError::NoGpusFree {
            total: 4,
            free: 0,
            needed: 1,
            suggestion: String::new(),
        };
        assert_eq!(
            catalogue.suggest(busy, "alice").to_string(),
            "all 4 GPUs are in use; try again later or use alice+default"
        );
        assert_eq!(
            catalogue.suggest(PlaceError::AllFull, "alice"),
            PlaceError::AllFull
        );
    }

    #[test]
    fn unknown_environment_lists_the_choices() {
        let err = catalogue().resolve("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment 'x'; available: default, gpu"
        );
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
    }
}
