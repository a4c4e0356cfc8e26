//! Turns what a person asked for into a [`ToolSpec`]: the offline generator
//! (deterministic, no network), the OpenAPI 3.x importer, the Anthropic
//! Messages API and OpenAI-compatible clients with their versioned system
//! prompt, and [`diff`] between two specs.
//!
//! This crate owns generation only: it must not touch the database, render
//! TypeScript or run the toolchain (that is `bmm-spec`), and it never puts a
//! user's text into a system prompt.

mod check;
pub mod diff;
mod error;
mod input;
pub mod llm;
mod names;
pub mod offline;
pub mod openapi;

use std::sync::Arc;

use bmm_core::config::GeneratorConfig;
use bmm_spec::ToolSpec;
use serde::{Deserialize, Serialize};

pub use check::validate_spec;
pub use diff::{SpecDiff, diff};
pub use error::GenerateError;
pub use input::{MAX_DESCRIPTION_CHARS, MAX_INSTRUCTION_CHARS, MAX_OPENAPI_BYTES};
pub use llm::{AnthropicGenerator, OpenAiGenerator, PROMPT_VERSION, RetryPolicy};
pub use offline::OfflineGenerator;

/// What to generate from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The person's description of the server (may be empty when `openapi` or `base` is given).
    pub description: String,
    /// An OpenAPI 3.0 / 3.1 document, JSON or YAML.
    pub openapi: Option<String>,
    /// The current spec when iterating, or the spec that failed the checks when repairing.
    pub base: Option<ToolSpec>,
    /// What to change in `base`.
    pub instruction: Option<String>,
    /// Compiler and scan errors of the previous attempt (`base`), to be corrected.
    pub repair: Option<Vec<String>>,
}

/// Tokens a model call consumed (summed over retries and corrections).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// A validated spec and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub spec: ToolSpec,
    /// Which generator made it: `offline`, `offline:openapi`, `anthropic:<model>`, `openai:<model>`.
    pub generator: String,
    pub usage: Option<Usage>,
    /// Things the user should know (shown in the preview and the build log).
    pub warnings: Vec<String>,
}

/// Something that makes tool specs. Use as `Arc<dyn Generator>`.
#[async_trait::async_trait]
pub trait Generator: Send + Sync {
    async fn generate(&self, req: &GenerateRequest) -> Result<Generated, GenerateError>;
    /// `offline`, `anthropic:<model>` or `openai:<model>`, as recorded on builds.
    fn name(&self) -> String;
}

/// The generator the configuration asks for.
pub fn from_config(cfg: &GeneratorConfig) -> Arc<dyn Generator> {
    match cfg {
        GeneratorConfig::Offline => Arc::new(OfflineGenerator),
        GeneratorConfig::Anthropic { api_key, model, base_url } => {
            Arc::new(AnthropicGenerator::new(api_key.clone(), model.clone(), base_url.clone(), RetryPolicy::default()))
        }
        GeneratorConfig::OpenAi { api_key, model, base_url } => {
            Arc::new(OpenAiGenerator::new(api_key.clone(), model.clone(), base_url.clone(), RetryPolicy::default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_picks_the_generator() {
        assert_eq!(from_config(&GeneratorConfig::Offline).name(), "offline");
        let a = from_config(&GeneratorConfig::Anthropic {
            api_key: "k".into(),
            model: "claude-opus-4-7".into(),
            base_url: "https://api.anthropic.com".parse().unwrap(),
        });
        assert_eq!(a.name(), "anthropic:claude-opus-4-7");
        let o = from_config(&GeneratorConfig::OpenAi {
            api_key: None,
            model: "llama3".into(),
            base_url: "http://127.0.0.1:11434/v1".parse().unwrap(),
        });
        assert_eq!(o.name(), "openai:llama3");
    }
}
