//! `gpus = 1 | "all" | ["0", "1"]`: the GPUs each container of an environment takes,
//! as configured and checked, sent as `pb::GpuRequest`.

use labssh_proto::pb;
use serde::Deserialize;

/// Longest device id: NVIDIA's UUIDs ("GPU-" and 36 characters) with room to spare.
const MAX_DEVICE_ID_LEN: usize = 64;

/// `gpus` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of GPUs, \"all\", or a list of device ids like [\"0\", \"1\"]"
)]
pub enum GpusConfig {
    /// This many of the node's GPUs, whichever are free.
    Count(i64),
    /// `"all"`: every GPU of the node.
    Word(String),
    /// These devices (index or UUID as `nvidia-smi -L` shows them).
    Ids(Vec<String>),
}

impl GpusConfig {
    /// The wire form; a request that does not check is never sent (the configuration
    /// is refused first).
    pub fn to_proto(&self) -> pb::GpuRequest {
        match self {
            GpusConfig::Count(n) => pb::GpuRequest {
                count: u32::try_from(*n).unwrap_or(0),
                ..Default::default()
            },
            GpusConfig::Word(_) => pb::GpuRequest {
                all: true,
                ..Default::default()
            },
            GpusConfig::Ids(ids) => pb::GpuRequest {
                device_ids: ids.clone(),
                ..Default::default()
            },
        }
    }

    /// Appends the problems, each prefixed with `key` (`environments.NAME.gpus`).
    pub fn check(&self, key: &str, problems: &mut Vec<String>) {
        match self {
            GpusConfig::Count(n) if *n < 1 => problems.push(format!(
                "{key}: {n} must be at least 1 (leave `gpus` out for none)"
            )),
            GpusConfig::Count(n) if u32::try_from(*n).is_err() => {
                problems.push(format!("{key}: {n} is too many"))
            }
            GpusConfig::Word(word) if word != "all" => problems.push(format!(
                "{key}: {word:?} must be \"all\", a number or a list of device ids"
            )),
            GpusConfig::Ids(ids) if ids.is_empty() => problems.push(format!(
                "{key}: the list is empty (leave `gpus` out for none)"
            )),
            GpusConfig::Ids(ids) => {
                for (i, id) in ids.iter().enumerate() {
                    if !is_device_id(id) {
                        problems.push(format!(
                            "{key}: {id:?} is not a device id like \"0\" or \"GPU-8f6c…\""
                        ));
                    } else if ids[..i].contains(id) {
                        problems.push(format!("{key}: {id:?} is listed twice"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Indexes and UUIDs: letters, digits and `-`.
fn is_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_DEVICE_ID_LEN
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `gpus = TEXT` parsed, its problems and wire form.
    fn parsed(text: &str) -> (Vec<String>, pb::GpuRequest) {
        #[derive(Deserialize)]
        struct Holder {
            gpus: GpusConfig,
        }
        let holder: Holder = toml::from_str(&format!("gpus = {text}")).unwrap();
        let mut problems = Vec::new();
        holder.gpus.check("environments.gpu.gpus", &mut problems);
        (problems, holder.gpus.to_proto())
    }

    #[test]
    fn three_shapes() {
        let (problems, wire) = parsed("2");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(wire.count, 2);
        let (problems, wire) = parsed("\"all\"");
        assert!(problems.is_empty(), "{problems:?}");
        assert!(wire.all);
        let (problems, wire) = parsed("[\"0\", \"GPU-8f6c1a2b\"]");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(wire.device_ids, ["0", "GPU-8f6c1a2b"]);
    }

    #[test]
    fn bad_requests_name_the_key() {
        for (text, want) in [
            ("0", "at least 1"),
            ("-1", "at least 1"),
            ("\"some\"", "must be \"all\""),
            ("[]", "empty"),
            ("[\"0\", \"0\"]", "twice"),
            ("[\"0 1\"]", "not a device id"),
        ] {
            let (problems, _) = parsed(text);
            assert_eq!(problems.len(), 1, "{text}: {problems:?}");
            assert!(
                problems[0].starts_with("environments.gpu.gpus: ") && problems[0].contains(want),
                "{text}: {problems:?}"
            );
        }
    }
}
