//! labssh telemetry, shared by every role.
//!
//! - [`init`]: `tracing` to stderr, plus OTLP (gRPC) export of spans and
//!   metrics when an endpoint is configured (`--otlp` or the standard
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`; `OTEL_SERVICE_NAME` names the service).
//! - [`grpc`]: W3C trace context carried in gRPC metadata, so controller and
//!   agent spans join the proxy's trace.
//! - [`catalogue`]: every labssh metric family, defined once.
//! - [`metrics`]: recording them, one module per role. The OpenTelemetry SDK
//!   holds the only copy of each figure; OTLP export and the Prometheus text
//!   on `/metrics` are two readers of it.
//! - [`http`]: the small listener serving `/metrics`, `/healthz` and
//!   `/readyz`.

pub mod audit;
pub mod catalogue;
pub mod grpc;
pub mod http;
mod init;
pub mod metrics;
pub mod prometheus;

pub use http::Health;
pub use init::{flush, init, InitError, Options, Telemetry};
