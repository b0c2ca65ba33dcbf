//! The process-wide meter provider, its instruments and the reader `/metrics`
//! collects from.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use opentelemetry::metrics::{MeterProvider, UpDownCounter};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::Resource;

use super::instruments::Metrics;

/// The process-wide meter provider and the reader `/metrics` collects from.
struct Registry {
    /// Kept so the periodic OTLP reader can be flushed at exit.
    provider: SdkMeterProvider,
    /// Collected on every scrape.
    reader: Arc<ManualReader>,
    /// The instruments.
    metrics: Metrics,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Lets the SDK own a reader that `/metrics` also holds.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

fn build(resource: Resource, otlp: Option<opentelemetry_otlp::MetricExporter>) -> Registry {
    // Prometheus wants running totals.
    let reader = Arc::new(
        ManualReader::builder()
            .with_temporality(Temporality::Cumulative)
            .build(),
    );
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(SharedReader(reader.clone()));
    if let Some(exporter) = otlp {
        builder = builder.with_periodic_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let metrics = Metrics::new(&provider.meter("labssh"));
    Registry {
        provider,
        reader,
        metrics,
    }
}

/// Installs the meter provider, with OTLP export when `otlp` is given.
/// Returns false when metrics were already in use (then OTLP export of
/// metrics is off, and `/metrics` still works).
pub(crate) fn install(
    resource: Resource,
    otlp: Option<opentelemetry_otlp::MetricExporter>,
) -> bool {
    let mut installed = false;
    REGISTRY.get_or_init(|| {
        installed = true;
        build(resource, otlp)
    });
    installed
}

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| build(Resource::builder().build(), None))
}

/// The instruments (a Prometheus-only provider is installed on first use if
/// [`crate::init`] has not run).
pub fn metrics() -> &'static Metrics {
    &registry().metrics
}

/// Flushes the OTLP metric export, if any.
pub(crate) fn force_flush() {
    if let Some(r) = REGISTRY.get() {
        let _ = r.provider.force_flush();
    }
}

/// Everything recorded so far, collected now.
pub fn collect() -> ResourceMetrics {
    let mut rm = ResourceMetrics::default();
    if let Err(e) = registry().reader.collect(&mut rm) {
        tracing::debug!("metrics collection failed: {e}");
    }
    rm
}

/// Everything recorded so far as Prometheus text.
pub fn render() -> String {
    crate::prometheus::encode(&collect())
}

pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Keeps a gauge incremented while it lives.
#[must_use = "the gauge goes back down when this is dropped"]
#[derive(Debug)]
pub struct Active(pub(crate) &'static UpDownCounter<i64>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}
