//! Logs and traces: JSON log lines on stdout always; spans exported over OTLP
//! when `BMM_OTLP_ENDPOINT` is set. The tracer provider is also installed
//! globally, with the W3C trace-context propagator, so the Temporal client and
//! worker carry the trace from the GraphQL request into the workflow and its
//! activities.

use anyhow::Context;
use bmm_core::Config;
use bmm_core::config::OtlpProtocol;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes spans when dropped at the end of `main`.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("bmm: flushing traces failed: {e}");
        }
    }
}

pub fn init(cfg: &Config, service: &'static str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(std::io::stdout);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            let exporter = match cfg.otlp_protocol {
                OtlpProtocol::Grpc => {
                    opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.as_str()).build()
                }
                OtlpProtocol::HttpProtobuf => {
                    let url = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
                    opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build()
                }
            }
            .context("OTLP exporter")?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
            // Workflow span ids must be the same on replay: the SDK's generator makes them so.
            let provider = SdkTracerProvider::builder()
                .with_id_generator(temporalio_sdk::opentelemetry::WorkflowIdGenerator::default())
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            Some(provider)
        }
        None => None,
    };
    // The Temporal SDK exports its workflow and activity spans itself (through
    // its OpenTelemetry plugin, linked to the caller's trace); its own tracing
    // spans would only repeat them as unlinked roots.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer("bmm")).with_filter(EnvFilter::new(
            "info,temporalio_sdk_core=off,temporalio_sdk=off,temporalio_client=off,temporalio_common=off,h2=off,tower=off,hyper=off",
        ))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(otel)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry { provider })
}
