//! The Prometheus side of the tests: a parser for the text exposition format
//! and a real `prometheus` server (Debian's package) on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_port, Proc};
use crate::telemetry::http;

/// How often the test Prometheus scrapes: fast, so a test waits seconds.
const SCRAPE_INTERVAL: &str = "1s";
/// Prometheus starts in a second or two; a cold disk cache can take longer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Family name → type, from `# TYPE` lines.
    pub types: BTreeMap<String, String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses Prometheus text format 0.0.4; fails on a malformed line.
    pub fn parse(text: &str) -> anyhow::Result<Exposition> {
        let mut out = Exposition::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    anyhow::bail!("line {}: bad TYPE line: {line}", n + 1);
                };
                out.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(
                parse_sample(line).map_err(|e| anyhow::anyhow!("line {}: {e}: {line}", n + 1))?,
            );
        }
        Ok(out)
    }

    /// Every name a query may use: sample names, and for each histogram
    /// family its `_bucket`, `_sum` and `_count` series.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.samples.iter().map(|s| s.name.clone()).collect();
        for (name, kind) in &self.types {
            names.insert(name.clone());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
        names
    }

    /// Sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| anyhow::anyhow!("no value"))?;
    let name = &line[..name_end];
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut key = String::new();
        let end;
        loop {
            let Some((i, c)) = chars.next() else {
                anyhow::bail!("unterminated labels");
            };
            match c {
                '}' => {
                    end = i;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    anyhow::ensure!(
                        chars.next().map(|(_, c)| c) == Some('"'),
                        "label value must be quoted"
                    );
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => anyhow::bail!("bad escape"),
                            },
                            Some((_, '"')) => break,
                            Some((_, c)) => value.push(c),
                            None => anyhow::bail!("unterminated label value"),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
        rest = &body[end + 1..];
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no value"))?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse()?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Fetches and parses `http://addr/metrics`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Exposition> {
    let response = http::get(addr, "/metrics").await?;
    anyhow::ensure!(
        response.status == 200,
        "/metrics answered {}",
        response.status
    );
    Exposition::parse(&response.body)
}

/// A real Prometheus on loopback; killed on drop.
pub struct Prometheus {
    /// Its HTTP API.
    pub addr: SocketAddr,
    /// The server process (its log is kept for failures).
    process: Proc,
}

impl Prometheus {
    /// Whether the `prometheus` binary is installed.
    pub fn available() -> bool {
        Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts Prometheus scraping `targets` (job name, address) every
    /// second, with its data under `dir`.
    pub async fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> anyhow::Result<Prometheus> {
        let mut config = format!(
            "global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\nscrape_configs:\n"
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let mut process = Proc::start("prometheus", cmd, dir)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = http::get(addr, "/-/ready").await {
                if r.status == 200 {
                    break;
                }
            }
            if !process.running() || Instant::now() > deadline {
                anyhow::bail!("prometheus did not become ready: {}", process.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Prometheus { addr, process })
    }

    /// Runs an instant query through the HTTP API; returns `data.result`.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let path = format!("/api/v1/query?query={}", http::encode(expr));
        let response = http::get(self.addr, &path).await?;
        let json: serde_json::Value = serde_json::from_str(&response.body)
            .map_err(|e| anyhow::anyhow!("query {expr}: {e}: {}", response.body))?;
        anyhow::ensure!(
            json["status"] == "success",
            "query {expr} failed: {}",
            response.body
        );
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Polls `expr` until it returns at least one series, or fails after
    /// `timeout`.
    pub async fn wait_series(
        &self,
        expr: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(expr).await?;
            if !result.is_empty() {
                return Ok(result);
            }
            if Instant::now() > deadline {
                let targets = http::get(self.addr, "/api/v1/targets")
                    .await
                    .map(|r| r.body)
                    .unwrap_or_default();
                anyhow::bail!(
                    "no series for {expr} within {timeout:?}; targets: {targets}; log: {}",
                    self.process.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let text = "# HELP a_total Things.\n# TYPE a_total counter\na_total{kind=\"x\",why=\"q\\\"uote\"} 3\n\
                    # TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_count 2\nplain 1.5e3\n";
        let e = Exposition::parse(text).unwrap();
        assert_eq!(e.sum("a_total", &[("kind", "x")]), 3.0);
        assert_eq!(e.samples[0].labels["why"], "q\"uote");
        assert_eq!(e.sum("h_seconds_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(e.sum("plain", &[]), 1500.0);
        assert!(e.names().contains("h_seconds_sum"));
        assert!(Exposition::parse("bad{x=1} 2").is_err());
    }
}
