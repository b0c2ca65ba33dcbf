//! GPUs as a placement resource: an environment's demand, and whether an agent has
//! enough free to meet it (its reported GPUs less those its containers hold and those
//! recent placements there will take).

use std::collections::{HashMap, HashSet};

use labssh_proto::pb;

use super::{AgentLoad, PlaceError};

/// The GPUs one container of an environment takes on its node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuDemand {
    /// None: any agent will do.
    #[default]
    None,
    /// This many, whichever are free.
    Count(u32),
    /// All of the node's (at least one).
    All,
    /// These devices.
    Ids(Vec<String>),
}

impl GpuDemand {
    /// The demand of an environment's `gpus`.
    pub fn of(request: Option<&pb::GpuRequest>) -> GpuDemand {
        match request {
            None => GpuDemand::None,
            Some(r) if !r.device_ids.is_empty() => GpuDemand::Ids(r.device_ids.clone()),
            Some(r) if r.all => GpuDemand::All,
            Some(r) if r.count > 0 => GpuDemand::Count(r.count),
            Some(_) => GpuDemand::None,
        }
    }

    /// Whether it takes no GPU.
    pub fn is_none(&self) -> bool {
        *self == GpuDemand::None
    }

    /// How many GPUs it takes on `agent`.
    pub fn count_on(&self, agent: &AgentLoad<'_>) -> u32 {
        match self {
            GpuDemand::None => 0,
            GpuDemand::Count(n) => *n,
            GpuDemand::All => (agent.gpus.len() as u32).max(1),
            GpuDemand::Ids(ids) => ids.len() as u32,
        }
    }

    /// Whether `agent` can give a new container these GPUs, `pending` of its free ones
    /// being promised to placements not in its inventory yet.
    pub fn fits(&self, agent: &AgentLoad<'_>, pending: u32) -> bool {
        let held = &agent.inventory.gpus_held;
        let free = free_gpus(agent.gpus, held).saturating_sub(pending);
        match self {
            GpuDemand::None => true,
            GpuDemand::Count(n) => free >= *n,
            GpuDemand::All => !agent.gpus.is_empty() && free == agent.gpus.len() as u32,
            GpuDemand::Ids(ids) => {
                free >= ids.len() as u32
                    && ids
                        .iter()
                        .all(|id| agent.gpus.contains(id) && !held.contains(id))
            }
        }
    }
}

/// The agents of `live` with GPUs enough free for `demand` (all of them for none),
/// `promised` (by agent) being promised to placements not in an inventory yet; an
/// error saying how many there are when none has.
pub fn fitting<'a>(
    live: &[AgentLoad<'a>],
    demand: &GpuDemand,
    promised: &HashMap<&str, u32>,
) -> Result<HashSet<&'a str>, PlaceError> {
    let promised = |a: &AgentLoad<'_>| promised.get(a.name).copied().unwrap_or(0);
    let fitting: HashSet<&str> = live
        .iter()
        .filter(|a| demand.fits(a, promised(a)))
        .map(|a| a.name)
        .collect();
    if !fitting.is_empty() || demand.is_none() {
        return Ok(fitting);
    }
    let count = |f: &dyn Fn(&AgentLoad<'_>) -> u32| live.iter().map(f).sum::<u32>();
    Err(PlaceError::NoGpusFree {
        total: count(&|a| a.gpus.len() as u32),
        free: count(&|a| free_gpus(a.gpus, &a.inventory.gpus_held).saturating_sub(promised(a))),
        needed: live.iter().map(|a| demand.count_on(a)).max().unwrap_or(1),
        // The caller knows the catalogue and fills it in.
        suggestion: String::new(),
    })
}

/// GPUs of `node` that no container holds.
pub fn free_gpus(node: &[String], held: &HashSet<String>) -> u32 {
    node.iter().filter(|g| !held.contains(*g)).count() as u32
}
