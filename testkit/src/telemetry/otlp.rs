//! An OTLP/gRPC receiver for tests: a real tonic server built from the OTLP
//! protobufs (trace and metrics services), keeping what it receives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One received span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Attributes as text.
    pub attributes: BTreeMap<String, String>,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
}

impl ReceivedSpan {
    /// An attribute's text, if present.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What the receiver has been sent.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metric_names: BTreeSet<String>,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Received>>);

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut got = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.spans.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        service: service.clone(),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv)))
                            .collect(),
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut got = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rm in request.into_inner().resource_metrics {
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    got.metric_names.insert(m.name);
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything received.
    received: Arc<Mutex<Received>>,
    /// Dropping it stops the server.
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port, on the current runtime.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = Sink(received.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .add_service(MetricsServiceServer::new(sink))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(OtlpReceiver {
            addr,
            received,
            _stop: stop,
        })
    }

    /// The endpoint to give an OTLP exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spans
            .clone()
    }

    /// Names of every metric received so far.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .metric_names
            .clone()
    }

    /// Waits until `done` holds for the spans received, or fails after
    /// `timeout` with what did arrive.
    pub async fn wait_spans(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if Instant::now() > deadline {
                let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
                anyhow::bail!("spans not received within {timeout:?}; got {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
