//! Claude through the Anthropic Messages API, with the spec as the input of
//! one forced tool call (`emit_tool_spec`) so the answer is structured.

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use super::{
    RetryPolicy, SYSTEM_PROMPT, TOOL_SPEC_SCHEMA, Unusable, accepted, correction, http_client, parse_candidate,
    post_json, prepare, unusable,
};
use crate::{GenerateError, GenerateRequest, Generated, Generator, Usage};

const TOOL_NAME: &str = "emit_tool_spec";
const API_VERSION: &str = "2023-06-01";
/// Room for a full spec with handler code.
const MAX_TOKENS: u32 = 16_000;

pub struct AnthropicGenerator {
    api_key: String,
    model: String,
    endpoint: String,
    policy: RetryPolicy,
    client: reqwest::Client,
}

impl AnthropicGenerator {
    /// `base_url` is the API origin, e.g. `https://api.anthropic.com`.
    pub fn new(api_key: String, model: String, base_url: Url, policy: RetryPolicy) -> Self {
        let endpoint = format!("{}/v1/messages", base_url.as_str().trim_end_matches('/'));
        AnthropicGenerator { api_key, model, endpoint, policy, client: http_client() }
    }

    fn headers(&self) -> Result<HeaderMap, GenerateError> {
        let mut h = HeaderMap::new();
        let key = HeaderValue::from_str(&self.api_key).map_err(|_| GenerateError::Upstream {
            message: "ANTHROPIC_API_KEY contains characters that cannot be sent in a header".into(),
            retryable: false,
        })?;
        h.insert("x-api-key", key);
        h.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        Ok(h)
    }

    fn body(&self, messages: &[Value]) -> Value {
        json!({
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "system": SYSTEM_PROMPT,
            "messages": messages,
            "tools": [{
                "name": TOOL_NAME,
                "description": "Return the complete tool spec of the MCP server.",
                "input_schema": *TOOL_SPEC_SCHEMA,
            }],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        })
    }
}

fn usage_of(resp: &Value) -> Usage {
    let n = |k: &str| resp.pointer(&format!("/usage/{k}")).and_then(Value::as_u64).unwrap_or(0);
    Usage { input_tokens: n("input_tokens"), output_tokens: n("output_tokens") }
}

#[async_trait::async_trait]
impl Generator for AnthropicGenerator {
    async fn generate(&self, req: &GenerateRequest) -> Result<Generated, GenerateError> {
        let prompt = prepare(req)?;
        let headers = self.headers()?;
        let mut messages = vec![json!({"role": "user", "content": prompt})];
        let mut usage = Usage::default();
        let attempts = self.policy.output_attempts.max(1);
        for round in 1..=attempts {
            let body = self.body(&messages);
            let resp = post_json(
                &self.client,
                &self.policy,
                &self.endpoint,
                &headers,
                &body,
                "Anthropic",
                "ANTHROPIC_API_KEY",
            )
            .await?;
            usage.add(usage_of(&resp));
            if resp.get("stop_reason").and_then(Value::as_str) == Some("max_tokens") {
                return Err(GenerateError::bad_output(
                    "the spec did not fit in the model's output limit; ask for fewer or simpler tools",
                ));
            }
            let content = resp.get("content").cloned().unwrap_or(Value::Null);
            let call = content.as_array().and_then(|blocks| {
                blocks.iter().find(|b| {
                    b.get("type").and_then(Value::as_str) == Some("tool_use")
                        && b.get("name").and_then(Value::as_str) == Some(TOOL_NAME)
                })
            });
            let problems = match call {
                None => Unusable::same(format!("the answer did not call {TOOL_NAME}")),
                Some(call) => match parse_candidate(call.get("input").unwrap_or(&Value::Null)) {
                    Ok(spec) => return Ok(accepted(self.name(), &self.model, round, usage, spec)),
                    Err(problems) => problems,
                },
            };
            tracing::debug!(round, ?problems, output = %content, "Anthropic answer unusable");
            if round == attempts {
                return Err(unusable(attempts, &problems));
            }
            // Ask for a correction in the same conversation.
            messages.push(json!({"role": "assistant", "content": content}));
            let text = correction(&problems);
            match call.and_then(|c| c.get("id")).and_then(Value::as_str) {
                Some(id) => messages.push(json!({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": id, "is_error": true, "content": text},
                ]})),
                None => messages.push(json!({"role": "user", "content": text})),
            }
        }
        unreachable!("the loop returns on its last round")
    }

    fn name(&self) -> String {
        format!("anthropic:{}", self.model)
    }
}
