//! Telemetry test helpers: an OTLP receiver, a real Prometheus, a parser for
//! the Prometheus text format and a checker for Grafana dashboards.

pub mod dashboards;
pub mod http;
pub mod otlp;
pub mod prometheus;
