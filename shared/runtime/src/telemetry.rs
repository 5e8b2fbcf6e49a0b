//! Telemetry: `tracing` for logs and spans, logs as JSON lines on standard error, and spans
//! exported over OTLP (HTTP, protobuf or JSON as `OTEL_EXPORTER_OTLP_PROTOCOL` says) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set — straight
//! from the process, no collector layer. The queue's metrics ([`QueueMetrics`]) go out the same
//! way every `OTEL_METRIC_EXPORT_INTERVAL` ms (60 s by default) when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set: counts summed by the backend, so a
//! Lambda deployment has figures that are not per instance. Spans always get OpenTelemetry ids, so every log line
//! inside one carries its `trace_id` and `span_id` (see [`record_ids`]) whether or not spans
//! are exported. `CONVERGE_LOG` filters (`info` by default, `EnvFilter` syntax).
//!
//! A Lambda function calls [`Telemetry::flush`] before each invocation returns: the process
//! may be frozen right after, with spans still in the batch.

use std::collections::HashMap;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
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
    /// The metrics' provider, when metrics are exported.
    meters: Option<SdkMeterProvider>,
}

fn setting_set(names: &[&str]) -> bool {
    names
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

impl Telemetry {
    /// Installs the global subscriber for `service` (its OpenTelemetry `service.name`). A
    /// second call in the same process keeps the first subscriber.
    pub fn init(service: &'static str) -> Telemetry {
        let endpoint_set = setting_set(&[
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]);
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let meters = setting_set(&[
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ])
        .then(|| {
            opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .build()
                .map_err(|e| eprintln!("converge: metrics are not exported: {e}"))
                .ok()
        })
        .flatten()
        .map(|exporter| {
            let meters = SdkMeterProvider::builder()
                .with_resource(resource.clone())
                .with_periodic_exporter(exporter)
                .build();
            opentelemetry::global::set_meter_provider(meters.clone());
            meters
        });
        // Every span is recorded, whatever a caller's `traceparent` says about sampling: a
        // client must not be able to switch off the server's traces of its requests.
        let mut builder = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn);
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
            meters,
        }
    }

    /// Sends the spans still in the batch and the metrics recorded since the last export
    /// (and waits for the collector's answers).
    pub async fn flush(&self) {
        if let Some(meters) = self.meters.clone() {
            let flushed = tokio::task::spawn_blocking(move || meters.force_flush()).await;
            if let Ok(Err(e)) = flushed {
                eprintln!("converge: metrics not flushed: {e}");
            }
        }
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

    /// Flushes and stops the exporters (at the end of a process).
    pub async fn shutdown(&self) {
        self.flush().await;
        let provider = self.provider.clone();
        let meters = self.meters.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = provider.shutdown();
            if let Some(meters) = meters {
                let _ = meters.shutdown();
            }
        })
        .await;
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

/// The queue's metrics, recorded by every worker and exported over OTLP (a no-op when metrics
/// are not exported): what a round decided, merges and their wait, retries spent, pauses,
/// lease contention and queue depth. Labels name the outcome and the queue (`repo@target`),
/// never a tenant.
pub struct QueueMetrics {
    decisions: Counter<u64>,
    merges: Counter<u64>,
    retries: Counter<u64>,
    paused: Counter<u64>,
    lease_contention: Counter<u64>,
    depth: Gauge<u64>,
    wait: Histogram<f64>,
    /// The queues a depth was recorded for, so that one that emptied is recorded as 0.
    seen: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl QueueMetrics {
    /// The instruments, made once per process on the global meter provider.
    pub fn get() -> &'static QueueMetrics {
        static METRICS: std::sync::OnceLock<QueueMetrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(|| {
            let meter = opentelemetry::global::meter("converge");
            QueueMetrics {
                decisions: meter
                    .u64_counter("converge.queue.decisions")
                    .with_description("Intents judged by queue rounds, by outcome")
                    .build(),
                merges: meter
                    .u64_counter("converge.queue.merges")
                    .with_description("Intents merged by the queue")
                    .build(),
                retries: meter
                    .u64_counter("converge.queue.retries")
                    .with_description("Failed attempts counted against intents' retry bound")
                    .build(),
                paused: meter
                    .u64_counter("converge.queue.paused")
                    .with_description("Queue keys paused because their environment failed")
                    .build(),
                lease_contention: meter
                    .u64_counter("converge.queue.lease_contention")
                    .with_description("Rounds not run because another worker held the key's lease")
                    .build(),
                depth: meter
                    .u64_gauge("converge.queue.depth")
                    .with_description("Actionable intents (READY, VALIDATED, QUEUED) per queue")
                    .build(),
                wait: meter
                    .f64_histogram("converge.queue.wait")
                    .with_unit("s")
                    .with_description("Time from an intent's creation to its merge")
                    .build(),
                seen: std::sync::Mutex::default(),
            }
        })
    }

    /// A round over `queue` (`repo@target`) that judged intents with these outcomes.
    pub fn round(&self, queue: &str, outcomes: &[converge_core::queue::RoundOutcome]) {
        use converge_core::queue::RoundOutcome;
        for outcome in outcomes {
            if *outcome == RoundOutcome::Unchanged {
                continue;
            }
            self.decisions.add(
                1,
                &[
                    KeyValue::new("queue", queue.to_owned()),
                    KeyValue::new("outcome", outcome.as_str()),
                ],
            );
            if *outcome == RoundOutcome::Paused {
                self.paused
                    .add(1, &[KeyValue::new("queue", queue.to_owned())]);
            }
        }
    }

    /// A failed attempt counted against an intent of `queue`'s retry bound.
    pub fn retry_spent(&self, queue: &str) {
        self.retries
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }

    /// The actionable intents of each queue (`repo@target` → count), as the sweep or the
    /// database-backed queue's poll counted them; a queue counted before and absent now is 0.
    pub fn depths(&self, depths: &std::collections::BTreeMap<String, u64>) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for queue in seen.iter().filter(|q| !depths.contains_key(*q)) {
            self.depth
                .record(0, &[KeyValue::new("queue", queue.clone())]);
        }
        for (queue, count) in depths {
            self.depth
                .record(*count, &[KeyValue::new("queue", queue.clone())]);
        }
        *seen = depths.keys().cloned().collect();
    }

    /// An intent of `queue` merged `waited` after it was created.
    pub fn merged(&self, queue: &str, waited: chrono::Duration) {
        let labels = [KeyValue::new("queue", queue.to_owned())];
        self.merges.add(1, &labels);
        self.wait
            .record(waited.num_milliseconds().max(0) as f64 / 1_000.0, &labels);
    }

    /// A round over `queue` found its lease held by another worker.
    pub fn contended(&self, queue: &str) {
        self.lease_contention
            .add(1, &[KeyValue::new("queue", queue.to_owned())]);
    }
}
