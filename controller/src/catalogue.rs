//! The environment catalogue as served to agents and proxies.

use labssh_proto::pb;

use crate::config::Config;
use crate::placement::PlaceError;

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
    fn unknown_environment_lists_the_choices() {
        let err = catalogue().resolve("x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment 'x'; available: default, gpu"
        );
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
    }
}
