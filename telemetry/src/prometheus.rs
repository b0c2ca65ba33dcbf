//! Prometheus text exposition (format 0.0.4) of the collected metrics.
//!
//! Every family of the catalogue gets its `# HELP` and `# TYPE` lines even
//! before its first sample, so a dashboard or alert can be checked against
//! `/metrics` of a fresh process. Labels a family does not declare are
//! dropped here, whatever an instrument was given.

use std::collections::HashMap;
use std::fmt::Write;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

use crate::catalogue::{Family, Kind, FAMILIES};

/// `Content-Type` of the text this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `rm` for the families of the catalogue.
pub fn encode(rm: &ResourceMetrics) -> String {
    let mut by_name: HashMap<&str, &Metric> = HashMap::new();
    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            by_name.insert(metric.name(), metric);
        }
    }
    let mut out = String::new();
    for family in FAMILIES {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        if let Some(metric) = by_name.get(family.name) {
            match metric.data() {
                AggregatedMetrics::F64(data) => samples(&mut out, family, data),
                AggregatedMetrics::U64(data) => samples(&mut out, family, data),
                AggregatedMetrics::I64(data) => samples(&mut out, family, data),
            }
        }
    }
    out
}

/// A sample value as Prometheus writes it.
trait Number: Copy {
    fn text(self) -> String;
}

impl Number for f64 {
    fn text(self) -> String {
        float(self)
    }
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn samples<T: Number>(out: &mut String, family: &Family, data: &MetricData<T>) {
    let mut lines = Vec::new();
    match data {
        MetricData::Sum(sum) => {
            for p in sum.data_points() {
                lines.push(format!(
                    "{}{} {}",
                    family.name,
                    labels(family, p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Gauge(gauge) => {
            for p in gauge.data_points() {
                lines.push(format!(
                    "{}{} {}",
                    family.name,
                    labels(family, p.attributes(), None),
                    p.value().text()
                ));
            }
        }
        MetricData::Histogram(histogram) => {
            for p in histogram.data_points() {
                let mut series = String::new();
                let mut cumulative = 0u64;
                let bounds: Vec<f64> = p.bounds().collect();
                let counts: Vec<u64> = p.bucket_counts().collect();
                for (i, count) in counts.iter().enumerate() {
                    cumulative += count;
                    let le = bounds.get(i).copied().unwrap_or(f64::INFINITY);
                    let _ = writeln!(
                        series,
                        "{}_bucket{} {cumulative}",
                        family.name,
                        labels(family, p.attributes(), Some(&float(le)))
                    );
                }
                if bounds.len() >= counts.len() {
                    // No overflow bucket reported: +Inf is everything.
                    let _ = writeln!(
                        series,
                        "{}_bucket{} {}",
                        family.name,
                        labels(family, p.attributes(), Some("+Inf")),
                        p.count()
                    );
                }
                let plain = labels(family, p.attributes(), None);
                let _ = writeln!(series, "{}_sum{plain} {}", family.name, p.sum().text());
                let _ = write!(series, "{}_count{plain} {}", family.name, p.count());
                lines.push(series);
            }
        }
        // Not used by labssh; an exponential histogram has no text form.
        MetricData::ExponentialHistogram(_) => {}
    }
    // Stable order, so diffs of two scrapes are readable.
    lines.sort();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
}

fn labels<'a>(
    family: &Family,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .filter(|kv| family.labels.contains(&kv.key.as_str()))
        .map(|kv| (kv.key.as_str().to_string(), kv.value.as_str().into_owned()))
        .collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(("le".into(), le.into()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn escape_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(escape_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(0.25), "0.25");
    }
}
