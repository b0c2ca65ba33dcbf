//! `[environments.NAME.network]`: where an environment's containers may open
//! connections (`egress`), as configured and checked.

use labssh_proto::egress::{self, Egress};
use labssh_proto::pb;
use serde::Deserialize;

/// An environment's network: `egress = "internet"` (the default), `"none"` (exam
/// mode: loopback only) or a list of `"HOST:PORT"`, `"IP:PORT"` and CIDR blocks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where containers' traffic may go.
    pub egress: EgressConfig,
}

/// `egress` as written: a word or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "\"internet\", \"none\" or a list of \"HOST:PORT\", \"IP:PORT\" and CIDR blocks"
)]
pub enum EgressConfig {
    /// `"internet"` or `"none"`.
    Mode(String),
    /// The allow-list.
    Allow(Vec<String>),
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig::Mode(egress::INTERNET.to_owned())
    }
}

impl NetworkConfig {
    /// The policy, or every problem with it.
    pub fn egress(&self) -> Result<Egress, Vec<String>> {
        match &self.egress {
            EgressConfig::Mode(mode) if mode == egress::INTERNET => Ok(Egress::Internet),
            EgressConfig::Mode(mode) if mode == egress::NONE => Ok(Egress::None),
            EgressConfig::Mode(other) => Err(vec![format!(
                "{other:?} must be \"internet\", \"none\" or a list of destinations"
            )]),
            EgressConfig::Allow(list) => egress::parse_allow(list).map(Egress::Allow),
        }
    }

    /// The wire form agents receive; a policy that does not check (never sent:
    /// the configuration is refused first) is the strictest.
    pub fn to_proto(&self) -> pb::NetworkPolicy {
        self.egress().unwrap_or(Egress::None).to_pb()
    }

    /// Appends the problems, each prefixed with `key` (`environments.NAME.network.egress`).
    pub fn check(&self, key: &str, problems: &mut Vec<String>) {
        if let Err(bad) = self.egress() {
            problems.extend(bad.into_iter().map(|p| format!("{key}: {p}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        network: NetworkConfig,
    }

    fn load(text: &str) -> Result<NetworkConfig, String> {
        toml::from_str::<Wrapper>(text)
            .map(|w| w.network)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn egress_forms() {
        assert_eq!(load("[network]").unwrap().egress(), Ok(Egress::Internet));
        let none = load("[network]\negress = \"none\"").unwrap();
        assert_eq!(none.egress(), Ok(Egress::None));
        assert_eq!(none.to_proto().egress, "none");
        let list =
            load("[network]\negress = [\"licence.example.edu:27000\", \"10.5.0.0/16\"]").unwrap();
        let wire = list.to_proto();
        assert_eq!(wire.egress, "allow");
        assert_eq!(wire.allow, ["licence.example.edu:27000", "10.5.0.0/16"]);
    }

    #[test]
    fn bad_egress_is_named() {
        let mut problems = Vec::new();
        load("[network]\negress = \"open\"")
            .unwrap()
            .check("environments.x.network.egress", &mut problems);
        load("[network]\negress = [\"nohost\", \"10.0.0.0/8\", \"a:0\"]")
            .unwrap()
            .check("environments.x.network.egress", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("environments.x.network.egress: \"open\""));
        assert!(
            problems[1].contains("\"nohost\" needs a port"),
            "{problems:?}"
        );
        assert!(problems[2].contains("from 1 to 65535"), "{problems:?}");
        let typo = load("[network]\negres = \"none\"").unwrap_err();
        assert!(typo.contains("unknown field `egres`"), "{typo}");
        let number = load("[network]\negress = 5").unwrap_err();
        assert!(
            number.contains("\"internet\", \"none\" or a list"),
            "{number}"
        );
    }
}
