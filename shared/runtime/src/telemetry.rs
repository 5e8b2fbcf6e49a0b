//! Telemetry: `tracing` for logs and spans, logs as JSON lines on standard error, and spans
//! exported over OTLP (HTTP, protobuf or JSON as `OTEL_EXPORTER_OTLP_PROTOCOL` says) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set — straight
//! from the process, no collector layer. Spans always get OpenTelemetry ids, so every log line
//! inside one carries its `trace_id` and `span_id` (see [`record_ids`]) whether or not spans
//! are exported. `CONVERGE_LOG` filters (`info` by default, `EnvFilter` syntax).
//!
//! A Lambda function calls [`Telemetry::flush`] before each invocation returns: the process
//! may be frozen right after, with spans still in the batch.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The installed telemetry of this process.
#[derive(Debug, Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Installs the global subscriber for `service` (its OpenTelemetry `service.name`). A
    /// second call in the same process keeps the first subscriber.
    pub fn init(service: &'static str) -> Telemetry {
        let endpoint_set = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        let mut exporting = false;
        if endpoint_set {
            match opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()
            {
                Ok(exporter) => {
                    builder = builder.with_batch_exporter(exporter);
                    exporting = true;
                }
                Err(e) => eprintln!("converge: spans are not exported: {e}"),
            }
        }
        let provider = builder.build();
        let filter =
            EnvFilter::try_from_env("CONVERGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr);
        let spans = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(spans)
            .try_init();
        Telemetry {
            provider,
            exporting,
        }
    }

    /// Sends the spans still in the batch (and waits for the collector's answer).
    pub async fn flush(&self) {
        if !self.exporting {
            return;
        }
        let provider = self.provider.clone();
        // The exporter's client blocks: not on the async workers.
        let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("converge: spans not flushed: {e}");
        }
    }

    /// Flushes and stops the exporter (at the end of a process).
    pub async fn shutdown(&self) {
        self.flush().await;
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Records the span's OpenTelemetry trace and span ids in its `trace_id` and `span_id` fields
/// (declared `tracing::field::Empty`), so the JSON log lines inside it carry them.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let otel = context.span();
    let ids = otel.span_context();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}

/// The W3C `traceparent` of the current span, to carry a trace through the queue; `None`
/// outside a span (or without telemetry).
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span a `traceparent` names (a queue message's sender), before
/// it is entered. A malformed value is ignored: the span stays a root.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}
