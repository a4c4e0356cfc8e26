//! Any OpenAI-compatible chat completions endpoint (OpenAI, a local model
//! server, a gateway), asked for the spec as a JSON-schema response format.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use super::{
    RetryPolicy, SYSTEM_PROMPT, TOOL_SPEC_SCHEMA, Unusable, accepted, correction, http_client, parse_candidate,
    post_json, prepare, unusable,
};
use crate::{GenerateError, GenerateRequest, Generated, Generator, Usage};

pub struct OpenAiGenerator {
    api_key: Option<String>,
    model: String,
    endpoint: String,
    policy: RetryPolicy,
    client: reqwest::Client,
}

impl OpenAiGenerator {
    /// `base_url` includes the API prefix, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub fn new(api_key: Option<String>, model: String, base_url: Url, policy: RetryPolicy) -> Self {
        let endpoint = format!("{}/chat/completions", base_url.as_str().trim_end_matches('/'));
        OpenAiGenerator { api_key, model, endpoint, policy, client: http_client() }
    }

    fn headers(&self) -> Result<HeaderMap, GenerateError> {
        let mut h = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| GenerateError::Upstream {
                message: "BMM_OPENAI_API_KEY contains characters that cannot be sent in a header".into(),
                retryable: false,
            })?;
            h.insert(AUTHORIZATION, v);
        }
        Ok(h)
    }

    fn body(&self, messages: &[Value]) -> Value {
        json!({
            "model": self.model,
            "messages": messages,
            "response_format": {
                "type": "json_schema",
                // Not strict: a tool's inputSchema is free-form, which strict mode cannot express.
                "json_schema": {"name": "tool_spec", "strict": false, "schema": *TOOL_SPEC_SCHEMA},
            },
        })
    }
}

fn usage_of(resp: &Value) -> Usage {
    let n = |k: &str| resp.pointer(&format!("/usage/{k}")).and_then(Value::as_u64).unwrap_or(0);
    Usage { input_tokens: n("prompt_tokens"), output_tokens: n("completion_tokens") }
}

#[async_trait::async_trait]
impl Generator for OpenAiGenerator {
    async fn generate(&self, req: &GenerateRequest) -> Result<Generated, GenerateError> {
        let prompt = prepare(req)?;
        let headers = self.headers()?;
        let mut messages =
            vec![json!({"role": "system", "content": SYSTEM_PROMPT}), json!({"role": "user", "content": prompt})];
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
                "The model server",
                "BMM_OPENAI_API_KEY",
            )
            .await?;
            usage.add(usage_of(&resp));
            let choice = resp.pointer("/choices/0").cloned().unwrap_or(Value::Null);
            if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
                return Err(GenerateError::bad_output(
                    "the spec did not fit in the model's output limit; ask for fewer or simpler tools",
                ));
            }
            if choice.pointer("/message/refusal").and_then(Value::as_str).is_some_and(|r| !r.is_empty()) {
                tracing::debug!(output = %choice, "model refused");
                return Err(GenerateError::bad_output("the model refused to build this server"));
            }
            let content = choice.pointer("/message/content").and_then(Value::as_str).unwrap_or_default().to_owned();
            let problems = if content.trim().is_empty() {
                Unusable::same("the answer was empty")
            } else {
                match parse_candidate(&Value::String(content.clone())) {
                    Ok(spec) => return Ok(accepted(self.name(), &self.model, round, usage, spec)),
                    Err(problems) => problems,
                }
            };
            tracing::debug!(round, ?problems, output = %content, "model answer unusable");
            if round == attempts {
                return Err(unusable(attempts, &problems));
            }
            messages.push(json!({"role": "assistant", "content": content}));
            messages.push(json!({"role": "user", "content": correction(&problems)}));
        }
        unreachable!("the loop returns on its last round")
    }

    fn name(&self) -> String {
        format!("openai:{}", self.model)
    }
}
