//! The adapters from [`crate::ports`] to the real crates: the spec generator
//! (`bmm-generator`). Each is the only place the API calls into that crate.

use std::sync::Arc;

use async_trait::async_trait;
use bmm_spec::ToolSpec;

use crate::ports::{GenerateFailure, GenerateInput, GeneratedSpec, SpecDiff, SpecGenerator};

/// `bmm_generator::Generator` as the API's [`SpecGenerator`].
pub struct Generator(pub Arc<dyn bmm_generator::Generator>);

#[async_trait]
impl SpecGenerator for Generator {
    async fn generate(&self, input: GenerateInput) -> Result<GeneratedSpec, GenerateFailure> {
        let req = bmm_generator::GenerateRequest {
            description: input.description,
            openapi: input.openapi,
            base: input.base,
            instruction: input.instruction,
            repair: None,
        };
        match self.0.generate(&req).await {
            Ok(g) => Ok(GeneratedSpec {
                spec: g.spec,
                generator: g.generator,
                usage: g
                    .usage
                    .map(|u| serde_json::json!({ "inputTokens": u.input_tokens, "outputTokens": u.output_tokens })),
                warnings: g.warnings,
            }),
            Err(bmm_generator::GenerateError::BadInput { field, message }) => {
                Err(GenerateFailure::BadInput { field, message })
            }
            // Both messages are written for the user by the generator.
            Err(e) => Err(GenerateFailure::Failed(e.to_string())),
        }
    }

    fn diff(&self, old: &ToolSpec, new: &ToolSpec) -> SpecDiff {
        let d = bmm_generator::diff(old, new);
        SpecDiff { added: d.added, removed: d.removed, changed: d.changed, breaking: d.breaking }
    }
}
