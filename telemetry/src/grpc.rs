//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata, so the
//! controller's and agents' spans join the trace of the SSH connection that
//! caused them.
//!
//! Client side: wrap the message in [`request`] inside the span the call
//! belongs to. Server side: [`set_parent`] on the handler's span before it
//! is entered.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes the current span's trace context into `metadata`.
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata))
    });
}

/// `message` as a request carrying the current span's trace context.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    inject(request.metadata_mut());
    request
}

/// The trace context a caller sent, if any.
pub fn extract(metadata: &MetadataMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)))
}

/// Makes `span` a child of the caller's span, when the caller sent one.
/// Call it right after creating the span, before entering it.
pub fn set_parent(span: &tracing::Span, metadata: &MetadataMap) {
    if metadata.get("traceparent").is_some() {
        let _ = span.set_parent(extract(metadata));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn context_round_trips_through_metadata() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let client = tracing::info_span!("client");
            let request = client.in_scope(|| request(()));
            assert!(request.metadata().get("traceparent").is_some());

            let server = tracing::info_span!("server");
            set_parent(&server, request.metadata());
            let sent = client.context().span().span_context().clone();
            let got = server.context().span().span_context().clone();
            assert_eq!(sent.trace_id(), got.trace_id());
            assert_ne!(sent.span_id(), got.span_id());

            // No context sent: the server span starts its own trace.
            let lone = tracing::info_span!("lone");
            set_parent(&lone, &MetadataMap::new());
            assert_ne!(
                lone.context().span().span_context().trace_id(),
                sent.trace_id()
            );
        });
    }
}
