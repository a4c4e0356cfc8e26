//! A tiny OTLP/HTTP trace receiver on loopback that keeps every span it gets.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub service: String,
    pub attributes: Vec<(String, String)>,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    pub endpoint: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let r = Receiver { spans: Default::default(), endpoint };
        let app = Router::new().route("/v1/traces", post(receive)).with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> &'static str {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else { return "" };
    let mut out = r.spans.lock().expect("lock");
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|res| res.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    name: s.name,
                    service: service.clone(),
                    attributes: s
                        .attributes
                        .into_iter()
                        .map(|a| (a.key, a.value.map(|v| format!("{:?}", v.value)).unwrap_or_default()))
                        .collect(),
                });
            }
        }
    }
    ""
}
