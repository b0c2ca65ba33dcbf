//! `summary.json`, the record other tools read, and the fuller
//! `levels.json` beside it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::phases::{LevelStats, Phase, PhaseHistogram};

/// One target at one level. The shape is a contract: scripts and dashboards
/// read it, so fields are only ever added to `levels.json`, not here.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record {
    pub target: String,
    /// Parallel connections started.
    pub level: u32,
    /// Connections that ran the command to exit status 0.
    pub ok: u64,
    /// Failed connections by kind; every kind is present, most are 0.
    pub failed: BTreeMap<String, u64>,
    /// Connect to disconnect, over the successful connections.
    pub total: Quantiles,
    /// Each phase, over the successful connections.
    pub phases: BTreeMap<String, Quantiles>,
}

/// Milliseconds; null when no connection succeeded.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Quantiles {
    fn of(h: &PhaseHistogram) -> Quantiles {
        Quantiles {
            p50_ms: h.quantile_ms(0.50),
            p99_ms: h.quantile_ms(0.99),
            max_ms: h.max_ms(),
        }
    }
}

impl Record {
    pub fn of(stats: &LevelStats) -> Record {
        Record {
            target: stats.target.clone(),
            level: stats.level,
            ok: stats.ok,
            failed: stats
                .failed
                .iter()
                .map(|(kind, n)| (kind.name().to_string(), *n))
                .collect(),
            total: Quantiles::of(&stats.total),
            phases: Phase::ALL
                .iter()
                .map(|p| (p.name().to_string(), Quantiles::of(stats.phase(*p))))
                .collect(),
        }
    }
}

/// Everything about one phase, for `levels.json` and `phases.csv`.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Detail {
    pub count: u64,
    pub min_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Detail {
    pub fn of(h: &PhaseHistogram) -> Detail {
        Detail {
            count: h.count(),
            min_ms: h.min_ms(),
            mean_ms: h.mean_ms(),
            p50_ms: h.quantile_ms(0.50),
            p90_ms: h.quantile_ms(0.90),
            p99_ms: h.quantile_ms(0.99),
            max_ms: h.max_ms(),
        }
    }
}

/// One target at one level, in full.
#[derive(Serialize, Debug, Clone)]
pub struct LevelDetail {
    pub target: String,
    pub level: u32,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    /// From releasing the clients to the last one finishing.
    pub wall_ms: f64,
    /// Successful connections per second of wall time.
    pub connections_per_s: f64,
    pub total: Detail,
    pub phases: BTreeMap<String, Detail>,
    /// One message per failure kind.
    pub failure_examples: BTreeMap<String, Vec<String>>,
}

impl LevelDetail {
    pub fn of(stats: &LevelStats) -> LevelDetail {
        let wall = stats.wall.as_secs_f64();
        LevelDetail {
            target: stats.target.clone(),
            level: stats.level,
            ok: stats.ok,
            failed: Record::of(stats).failed,
            wall_ms: wall * 1000.0,
            connections_per_s: if wall > 0.0 {
                stats.ok as f64 / wall
            } else {
                0.0
            },
            total: Detail::of(&stats.total),
            phases: Phase::ALL
                .iter()
                .map(|p| (p.name().to_string(), Detail::of(stats.phase(*p))))
                .collect(),
            failure_examples: stats
                .examples
                .iter()
                .map(|(k, v)| (k.name().to_string(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Failure, FailureKind, Timings};
    use std::time::Duration;

    #[test]
    fn summary_records_have_the_documented_shape() {
        let mut stats = LevelStats::new("labssh", 3);
        let mut t = Timings::start();
        for phase in Phase::ALL {
            t.set(phase, Duration::from_millis(2));
        }
        t.total = Duration::from_millis(12);
        stats.record(&Ok(t));
        stats.record(&Err(Failure::new(
            FailureKind::Refused,
            Phase::TcpConnect,
            "x",
        )));
        let value = serde_json::to_value(Record::of(&stats)).unwrap();
        let object = value.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["failed", "level", "ok", "phases", "target", "total"]);
        assert_eq!(value["target"], "labssh");
        assert_eq!(value["level"], 3);
        assert_eq!(value["ok"], 1);
        assert_eq!(value["failed"]["refused"], 1);
        assert_eq!(value["failed"]["auth_failed"], 0);
        for kind in [
            "refused",
            "timeout",
            "auth_failed",
            "channel_failed",
            "nonzero_exit",
        ] {
            assert!(value["failed"].get(kind).is_some(), "{kind}");
        }
        let total = value["total"].as_object().unwrap();
        let mut total_keys: Vec<&str> = total.keys().map(String::as_str).collect();
        total_keys.sort();
        assert_eq!(total_keys, ["max_ms", "p50_ms", "p99_ms"]);
        assert!((value["total"]["p50_ms"].as_f64().unwrap() - 12.0).abs() < 0.1);
        for phase in [
            "tcp_connect",
            "kex",
            "auth",
            "channel_open",
            "exec_first_byte",
            "exec_exit",
        ] {
            assert!(value["phases"][phase]["p99_ms"].is_number(), "{phase}");
        }
        // And it reads back.
        let back: Record = serde_json::from_value(value).unwrap();
        assert_eq!(back, Record::of(&stats));
    }

    #[test]
    fn a_level_without_successes_has_null_latencies() {
        let stats = LevelStats::new("a", 1);
        let value = serde_json::to_value(Record::of(&stats)).unwrap();
        assert!(value["total"]["p50_ms"].is_null());
    }
}
