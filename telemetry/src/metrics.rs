//! Every labssh metric, defined once.
//!
//! [`FAMILIES`] (in `catalogue.rs`) is the catalogue: name, help, type and the only labels a
//! family may carry. The instruments in [`Metrics`] are built from it, the
//! Prometheus encoder renders from it (dropping any label it does not
//! declare), and the Grafana dashboards are checked against it. No label is
//! ever a student's identity: a class of 300 would make 300 series of every
//! family. Identities belong in traces.
//!
//! The OpenTelemetry SDK holds each figure; the OTLP exporter and `/metrics`
//! both read that one copy. The recording helpers (one module per role) take `&'static str`
//! label values wherever the value set is fixed, so a user name cannot slip
//! into a label by accident; only agent names (a handful of configured
//! nodes) are dynamic.

mod agent;
mod controller;
mod errors;
mod instruments;
mod proxy;
mod registry;
mod web;

pub use crate::catalogue::{family, Family, Kind, FAMILIES, LOGIN_SECONDS, SETUP_SECONDS};
pub use agent::*;
pub use controller::*;
pub use errors::{error, Component};
pub use instruments::Metrics;
pub use proxy::*;
pub use registry::{collect, metrics, render, Active};
pub(crate) use registry::{force_flush, install};
pub use web::*;
