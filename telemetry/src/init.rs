//! Start-up: logs to stderr always; spans and metrics over OTLP (gRPC) when
//! an endpoint is configured.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer};

/// Log filter when `RUST_LOG` is unset: our own info, others' warnings.
pub const DEFAULT_LOG_FILTER: &str = "info,russh=warn,h2=warn,tower=warn,hyper=warn";
/// The standard variable naming the OTLP endpoint.
const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Its traces-only variant, honoured as well.
const OTLP_TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The standard variable naming the service.
const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// Crates whose info spans are exported whatever `RUST_LOG` says: the
/// phases are the point of the traces, not log noise.
const TRACED_CRATES: &[&str] = &[
    "labssh",
    "labssh_proxy",
    "labssh_controller",
    "labssh_agent",
    "labssh_telemetry",
];

/// How to start telemetry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Service name, unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
    /// OTLP gRPC endpoint (e.g. `http://127.0.0.1:4317`); `None` falls back
    /// to `OTEL_EXPORTER_OTLP_ENDPOINT`, and without either nothing is
    /// exported.
    pub otlp_endpoint: Option<String>,
    /// Log filter used when `RUST_LOG` is unset.
    pub default_log_filter: String,
    /// Logs go through the test harness's capture instead of stderr.
    pub test_writer: bool,
}

impl Options {
    /// Options for `service_name` with the defaults.
    pub fn new(service_name: &str) -> Options {
        Options {
            service_name: service_name.to_string(),
            otlp_endpoint: None,
            default_log_filter: DEFAULT_LOG_FILTER.to_string(),
            test_writer: false,
        }
    }
}

/// The tracer provider, kept for [`flush`] and shutdown.
static TRACER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// What [`init`] set up. Call [`Telemetry::shutdown`] before exit so the
/// last spans are sent.
#[derive(Debug)]
pub struct Telemetry {
    /// Where spans and metrics go, if anywhere.
    otlp: Option<String>,
    /// The service name used.
    service_name: String,
}

impl Telemetry {
    /// The OTLP endpoint in use, if any (`"(environment)"` when the
    /// exporter reads it from `OTEL_EXPORTER_OTLP_*`).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp.as_deref()
    }

    /// The service name in use.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Sends what is buffered and stops the exporters.
    pub async fn shutdown(self) {
        if self.otlp.is_none() {
            return;
        }
        let _ = tokio::task::spawn_blocking(|| {
            if let Some(t) = TRACER.get() {
                let _ = t.shutdown();
            }
            crate::metrics::force_flush();
        })
        .await;
    }
}

/// Sends buffered spans and metrics now (tests; exit paths).
pub async fn flush() {
    let _ = tokio::task::spawn_blocking(|| {
        if let Some(t) = TRACER.get() {
            let _ = t.force_flush();
        }
        crate::metrics::force_flush();
    })
    .await;
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// OTLP export was asked for outside a Tokio runtime; its exporter runs on one.
    #[error("telemetry: OTLP export must be set up inside a Tokio runtime")]
    NoRuntime,
    /// The OTLP span exporter could not be built (a bad endpoint, say).
    #[error("OTLP span exporter: {0}")]
    SpanExporter(#[source] ExporterBuildError),
    /// The OTLP metric exporter could not be built.
    #[error("OTLP metric exporter: {0}")]
    MetricExporter(#[source] ExporterBuildError),
    /// Another global `tracing` subscriber is installed already.
    #[error("telemetry: cannot install the tracing subscriber: {0}")]
    Subscriber(#[source] TryInitError),
}

/// Installs the global `tracing` subscriber, the W3C trace-context
/// propagator and the meter provider. Must run inside a Tokio runtime that
/// outlives the exporters (the OTLP tonic exporter is built on it), and
/// before any metric is recorded.
pub fn init(options: Options) -> Result<Telemetry, InitError> {
    let service_name = env(SERVICE_NAME_VAR).unwrap_or(options.service_name);
    let explicit = options.otlp_endpoint.filter(|e| !e.trim().is_empty());
    let from_env = env(OTLP_ENDPOINT_VAR).or_else(|| env(OTLP_TRACES_ENDPOINT_VAR));
    let otlp = explicit.clone().or(from_env);
    if otlp.is_some() && tokio::runtime::Handle::try_current().is_err() {
        return Err(InitError::NoRuntime);
    }
    let resource = Resource::builder()
        .with_service_name(service_name.clone())
        .build();

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let (tracer, metric_exporter) = match &otlp {
        None => (None, None),
        Some(_) => (
            Some(tracer(explicit.as_deref(), resource.clone())?),
            Some(metric_exporter(explicit.as_deref())?),
        ),
    };
    let metrics_installed = crate::metrics::install(resource, metric_exporter);
    install_subscriber(&options.default_log_filter, options.test_writer, tracer)?;

    let otlp = otlp.map(|e| {
        if explicit.is_some() {
            e
        } else {
            "(environment)".into()
        }
    });
    if !metrics_installed {
        tracing::warn!(
            "metrics were recorded before telemetry started; they are not exported over OTLP"
        );
    }
    if let Some(endpoint) = &otlp {
        tracing::info!(endpoint = %endpoint, service = %service_name, "exporting traces and metrics over OTLP");
    }
    Ok(Telemetry { otlp, service_name })
}

/// The tracer exporting spans over OTLP to `endpoint` (else to what the
/// `OTEL_EXPORTER_OTLP_*` variables say), installed as the global provider.
fn tracer(endpoint: Option<&str>, resource: Resource) -> Result<Tracer, InitError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint.to_owned());
    }
    let exporter = builder.build().map_err(InitError::SpanExporter)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer("labssh");
    let _ = TRACER.set(provider);
    Ok(tracer)
}

/// The exporter sending metrics over OTLP to `endpoint` (else to what the
/// `OTEL_EXPORTER_OTLP_*` variables say), as running totals.
fn metric_exporter(
    endpoint: Option<&str>,
) -> Result<opentelemetry_otlp::MetricExporter, InitError> {
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_temporality(opentelemetry_sdk::metrics::Temporality::Cumulative);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint.to_owned());
    }
    builder.build().map_err(InitError::MetricExporter)
}

/// Logs through `RUST_LOG` (else `default_filter`) to stderr or the test
/// harness; spans of our own crates to `tracer` when there is one.
fn install_subscriber(
    default_filter: &str,
    test_writer: bool,
    tracer: Option<Tracer>,
) -> Result<(), InitError> {
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = if test_writer {
        fmt.with_test_writer().boxed()
    } else {
        // Colour only for people: log files and journald get plain text.
        fmt.with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let otel = tracer.map(|tracer| {
        let targets = TRACED_CRATES
            .iter()
            .fold(Targets::new().with_default(Level::WARN), |t, c| {
                t.with_target(*c, Level::INFO)
            });
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(targets)
    });
    // Also routes `log` records (russh uses `log`) into the same subscriber.
    tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter))
        .with(otel)
        .try_init()
        .map_err(InitError::Subscriber)
}
