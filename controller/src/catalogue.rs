//! The environment catalogue as served to agents and proxies.

use labssh_proto::groups::allows;
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
    /// The environment's session recording mode ("off" when it names none).
    pub fn record(&self, environment: &str) -> String {
        self.environments
            .iter()
            .find(|e| e.name == environment)
            .map(|e| e.record.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "off".to_owned())
    }

    pub fn gpu_demand(&self, environment: &str) -> GpuDemand {
        let env = self.environments.iter().find(|e| e.name == environment);
        GpuDemand::of(env.and_then(|e| e.gpus.as_ref()))
    }

    /// `error` with a login `user` could use instead when no GPUs are free: the
    /// default environment if it takes none, else the first that takes none,
    /// among those `identity` may use.
    pub fn suggest(
        &self,
        error: PlaceError,
        user: &str,
        identity: Option<&pb::Identity>,
    ) -> PlaceError {
        let PlaceError::NoGpusFree {
            total,
            free,
            needed,
            ..
        } = error
        else {
            return error;
        };
        let without_gpus = |e: &&pb::Environment| e.gpus.is_none() && allows(e, identity);
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

    /// The environment a login of `identity` means, if it may use it: as
    /// [`Catalogue::resolve`], refused when the environment's `allowed_groups`
    /// leave the student out; every error lists only the student's own choices.
    pub fn resolve_for<'a>(
        &'a self,
        requested: &str,
        identity: Option<&pb::Identity>,
    ) -> Result<&'a str, PlaceError> {
        let available = || self.available_to(identity);
        let name = self.resolve(requested).map_err(|e| match e {
            PlaceError::UnknownEnvironment { requested, .. } => PlaceError::UnknownEnvironment {
                requested,
                available: available(),
            },
            other => other,
        })?;
        match self.environment(name) {
            Some(env) if !allows(env, identity) => Err(PlaceError::NotAllowed {
                requested: name.to_owned(),
                default: requested.is_empty(),
                available: available(),
            }),
            _ => Ok(name),
        }
    }

    /// The names of the environments `identity` may use, sorted.
    pub fn available_to(&self, identity: Option<&pb::Identity>) -> Vec<String> {
        self.environments
            .iter()
            .filter(|e| allows(e, identity))
            .map(|e| e.name.clone())
            .collect()
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&pb::Environment> {
        self.environments.iter().find(|e| e.name == name)
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
            catalogue.suggest(busy, "alice", None).to_string(),
            "all 4 GPUs are in use; try again later or use alice+default"
        );
        assert_eq!(
            catalogue.suggest(PlaceError::AllFull, "alice", None),
            PlaceError::AllFull
        );
    }

    /// default (everyone), cs101env (cs101), staff (staff), web (cs101, cs102).
    fn restricted() -> Catalogue {
        let mut config = Config::default();
        for (name, groups) in [
            ("cs101env", &["cs101"][..]),
            ("staff", &["staff"][..]),
            ("web", &["cs101", "cs102"][..]),
        ] {
            config.environments.insert(
                name.to_string(),
                EnvironmentConfig {
                    image: "labssh/busybox".to_string(),
                    allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
                    ..EnvironmentConfig::default()
                },
            );
        }
        Catalogue::new(&config)
    }

    fn identity(groups: &[&str]) -> pb::Identity {
        pb::Identity {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn groups_decide_who_may_use_an_environment() {
        let catalogue = restricted();
        let cs101 = identity(&["cs101"]);
        assert_eq!(
            catalogue.resolve_for("cs101env", Some(&cs101)),
            Ok("cs101env")
        );
        assert_eq!(catalogue.resolve_for("web", Some(&cs101)), Ok("web"));
        assert_eq!(catalogue.resolve_for("", Some(&cs101)), Ok("default"));
        let cs102 = identity(&["cs102"]);
        let refused = catalogue.resolve_for("cs101env", Some(&cs102)).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "environment 'cs101env' is not available to you; available: default, web"
        );
        assert_eq!(
            tonic::Status::from(refused).code(),
            tonic::Code::PermissionDenied
        );
        // No identity (or no groups): only the unrestricted ones.
        assert_eq!(catalogue.available_to(None), ["default"]);
        assert!(catalogue.resolve_for("staff", None).is_err());
        assert_eq!(
            catalogue.available_to(Some(&identity(&["staff", "cs102"]))),
            ["default", "staff", "web"]
        );
    }

    #[test]
    fn an_unknown_environment_lists_only_the_students_own() {
        let catalogue = restricted();
        let err = catalogue
            .resolve_for("nope", Some(&identity(&["cs102"])))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment 'nope'; available: default, web"
        );
        // The operator's view (prestart) still lists them all.
        assert_eq!(
            catalogue.resolve("nope").unwrap_err().to_string(),
            "unknown environment 'nope'; available: cs101env, default, staff, web"
        );
    }

    #[test]
    fn a_restricted_default_says_so_and_what_else_there_is() {
        let mut config = Config::default();
        config
            .environments
            .get_mut("default")
            .unwrap()
            .allowed_groups = vec!["staff".into()];
        config.environments.insert(
            "cs101env".to_string(),
            EnvironmentConfig {
                image: "labssh/busybox".to_string(),
                allowed_groups: vec!["cs101".into()],
                ..EnvironmentConfig::default()
            },
        );
        let catalogue = Catalogue::new(&config);
        let err = catalogue
            .resolve_for("", Some(&identity(&["cs101"])))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the default environment 'default' is not available to you; available: cs101env (log in as USER+NAME)"
        );
        let nothing = catalogue.resolve_for("", None).unwrap_err();
        assert_eq!(
            nothing.to_string(),
            "the default environment 'default' is not available to you, nor is any other; ask your teacher or operator"
        );
    }

    #[test]
    fn a_gpu_suggestion_is_one_the_student_may_use() {
        let mut config = Config::default();
        config
            .environments
            .get_mut("default")
            .unwrap()
            .allowed_groups = vec!["staff".into()];
        for (name, gpus, groups) in [
            ("gpu", true, vec![]),
            ("cpu", false, vec!["cs101".to_string()]),
        ] {
            config.environments.insert(
                name.to_string(),
                EnvironmentConfig {
                    image: "labssh/busybox".to_string(),
                    gpus: gpus.then_some(crate::config::GpusConfig::Count(1)),
                    allowed_groups: groups,
                    ..EnvironmentConfig::default()
                },
            );
        }
        let catalogue = Catalogue::new(&config);
        let busy = || PlaceError::NoGpusFree {
            total: 1,
            free: 0,
            needed: 1,
            suggestion: String::new(),
        };
        let cs101 = identity(&["cs101"]);
        assert!(catalogue
            .suggest(busy(), "alice", Some(&cs101))
            .to_string()
            .ends_with("or use alice+cpu"));
        assert_eq!(
            catalogue.suggest(busy(), "bob", None).to_string(),
            "all 1 GPUs are in use; try again later"
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
