//! This node's GPUs and which of them a new container gets.
//!
//! The node's GPUs come from the `gpus` key of agent.toml, or, without it, from
//! `nvidia-smi -L` when that is installed (none otherwise). A container is given
//! concrete device ids when it is created and keeps them (the `labssh.gpus` label), so
//! the agent, even restarted, knows who holds which, and reports both to the
//! controller, which places GPU environments only where enough are free.

use std::collections::HashSet;
use std::process::Command;

use labssh_proto::pb;

use crate::config::Config;

/// The program listing NVIDIA GPUs, one `GPU N: NAME (UUID: ...)` line each.
const NVIDIA_SMI: &str = "nvidia-smi";

/// Why a container could not get its GPUs; the message is for the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuShortage {
    /// Fewer GPUs free here than asked for.
    #[error("this environment needs {needed} GPUs and {free} of this node's {total} are free; try again later")]
    NotEnough {
        /// How many the environment takes.
        needed: usize,
        /// How many nobody holds.
        free: usize,
        /// The node's GPUs.
        total: usize,
    },
    /// A named device is not on this node, or someone holds it.
    #[error("GPU {0} is not free on this node; try again later")]
    Taken(String),
}

/// The node's GPUs: `gpus` from the config, else what `nvidia-smi -L` lists.
pub fn node_gpus(config: &Config) -> Vec<String> {
    if let Some(gpus) = &config.gpus {
        return gpus.clone();
    }
    match Command::new(NVIDIA_SMI).arg("-L").output() {
        Ok(out) if out.status.success() => {
            let gpus = parse_list(&String::from_utf8_lossy(&out.stdout));
            tracing::info!(gpus = ?gpus, "GPUs found by nvidia-smi");
            gpus
        }
        Ok(out) => {
            tracing::warn!(status = %out.status, "nvidia-smi -L failed; this node offers no GPUs (set `gpus` to list them)");
            Vec::new()
        }
        // Not installed: a node without GPUs.
        Err(_) => Vec::new(),
    }
}

/// The device indexes of `nvidia-smi -L`'s lines (`GPU 0: Tesla T4 (UUID: GPU-…)`).
fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("GPU ")?;
            let (index, _) = rest.split_once(':')?;
            index.parse::<u32>().ok().map(|i| i.to_string())
        })
        .collect()
}

/// The devices a new container of an environment asking for `request` gets, of the
/// node's `node` GPUs of which `held` are taken: the lowest free ones for a count,
/// every one for "all", exactly the named ones for a list.
pub fn assign(
    request: &pb::GpuRequest,
    node: &[String],
    held: &HashSet<String>,
) -> Result<Vec<String>, GpuShortage> {
    let free: Vec<&String> = node.iter().filter(|g| !held.contains(*g)).collect();
    let not_enough = |needed: usize| GpuShortage::NotEnough {
        needed,
        free: free.len(),
        total: node.len(),
    };
    if !request.device_ids.is_empty() {
        for id in &request.device_ids {
            if !free.contains(&id) {
                return Err(GpuShortage::Taken(id.clone()));
            }
        }
        return Ok(request.device_ids.clone());
    }
    let needed = if request.all {
        node.len().max(1)
    } else {
        request.count as usize
    };
    if needed == 0 {
        return Ok(Vec::new());
    }
    if free.len() < needed {
        return Err(not_enough(needed));
    }
    Ok(free.into_iter().take(needed).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn nvidia_smi_lines() {
        let text = "GPU 0: Tesla T4 (UUID: GPU-8f6c1a2b-aaaa)\nGPU 1: Tesla T4 (UUID: GPU-9)\n  MIG 1g.5gb Device 0: (UUID: MIG-1)\n";
        assert_eq!(parse_list(text), ["0", "1"]);
        assert!(parse_list("No devices were found\n").is_empty());
    }

    #[test]
    fn counts_take_the_lowest_free() {
        let node = ids(&["0", "1", "2", "3"]);
        let held: HashSet<String> = ids(&["0", "2"]).into_iter().collect();
        let two = pb::GpuRequest {
            count: 2,
            ..Default::default()
        };
        assert_eq!(assign(&two, &node, &held).unwrap(), ["1", "3"]);
        let three = pb::GpuRequest {
            count: 3,
            ..Default::default()
        };
        assert_eq!(
            assign(&three, &node, &held).unwrap_err().to_string(),
            "this environment needs 3 GPUs and 2 of this node's 4 are free; try again later"
        );
    }

    #[test]
    fn all_and_named_devices() {
        let node = ids(&["0", "1"]);
        let all = pb::GpuRequest {
            all: true,
            ..Default::default()
        };
        assert_eq!(assign(&all, &node, &HashSet::new()).unwrap(), ["0", "1"]);
        let one_held: HashSet<String> = ids(&["1"]).into_iter().collect();
        assert!(assign(&all, &node, &one_held).is_err());
        assert!(
            assign(&all, &[], &HashSet::new()).is_err(),
            "a node without GPUs has no 'all'"
        );
        let named = pb::GpuRequest {
            device_ids: ids(&["1"]),
            ..Default::default()
        };
        assert_eq!(assign(&named, &node, &HashSet::new()).unwrap(), ["1"]);
        assert_eq!(
            assign(&named, &node, &one_held),
            Err(GpuShortage::Taken("1".into()))
        );
        let elsewhere = pb::GpuRequest {
            device_ids: ids(&["7"]),
            ..Default::default()
        };
        assert!(assign(&elsewhere, &node, &HashSet::new()).is_err());
    }
}
