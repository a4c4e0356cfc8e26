//! generate: the version's spec, from (in order) a previous attempt, the
//! version row the API filled from a valid preview, the preview itself while
//! it is valid, or the generator when the preview expired.

use bmm_db::models::Preview;
use bmm_db::schema::{builds, previews, server_versions, servers};
use bmm_generator::{GenerateError, GenerateRequest};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{load_version, spec_digest_of};
use crate::build::BuildActivities;
use crate::error::{StepError, kind};
use crate::model::{BuildInput, SpecRef};
use crate::report::Reporter;

pub async fn run(acts: &BuildActivities, r: Reporter, b: &BuildInput) -> Result<SpecRef, StepError> {
    let mut conn = r.conn().await?;
    let version = load_version(&mut conn, b).await?;

    // A previous attempt (or the API, from a valid preview) already stored the spec.
    if let Some(json) = version.spec.clone() {
        let spec: bmm_spec::ToolSpec = serde_json::from_value(json)
            .map_err(|e| StepError::rejected(kind::INVALID_SPEC, format!("the stored spec is not a tool spec: {e}")))?;
        let code_problems = validate(&spec)?;
        if code_problems > 0 {
            r.log(&format!("the handler code breaks {code_problems} rule(s); the check step shows where")).await?;
        }
        let digest = spec_digest_of(&spec);
        if version.spec_digest.as_deref() != Some(digest.as_str()) {
            diesel::update(server_versions::table.filter(server_versions::id.eq(b.version_id)))
                .set(server_versions::spec_digest.eq(&digest))
                .execute(&mut conn)
                .await?;
        }
        drop(conn);
        r.log(&format!("spec from the preview (generator: {})", version.generator)).await?;
        record_generator(&r, b, &version.generator, None).await?;
        r.succeeded(&format!("spec ready: {} tool(s)", spec.tools.len()), Some(spec_summary(&spec, &digest))).await?;
        return Ok(SpecRef { spec_digest: digest });
    }

    let preview: Option<Preview> = match b.preview_id {
        Some(id) => previews::table
            .filter(previews::id.eq(id))
            .filter(previews::org_id.eq(b.org_id))
            .select(Preview::as_select())
            .first(&mut conn)
            .await
            .optional()?,
        None => None,
    };
    let Some(preview) = preview else {
        return Err(StepError::rejected(
            kind::BAD_INPUT,
            "the build has no spec and no preview to make one from; preview the server again",
        ));
    };

    let (spec, generator, usage) = if preview.expires_at > Utc::now() {
        let spec: bmm_spec::ToolSpec = serde_json::from_value(preview.spec.clone()).map_err(|e| {
            StepError::rejected(kind::INVALID_SPEC, format!("the preview's spec is not a tool spec: {e}"))
        })?;
        r.log(&format!("spec from the preview (generator: {})", preview.generator)).await?;
        (spec, preview.generator.clone(), preview.usage.clone())
    } else {
        r.warning("preview expired: regenerated").await?;
        // An iteration preview changes the server's current spec.
        let base = match &preview.instruction {
            Some(_) => current_spec(&mut conn, b).await?,
            None => None,
        };
        drop(conn);
        r.log(&format!("generator: {}", generator_label(acts))).await?;
        let req = GenerateRequest {
            description: preview.description.clone(),
            openapi: preview.openapi.clone(),
            base,
            instruction: preview.instruction.clone(),
            repair: None,
        };
        let generated = acts.generator.generate(&req).await.map_err(generate_error)?;
        for w in &generated.warnings {
            r.warning(w).await?;
        }
        let usage = generated.usage.map(|u| serde_json::to_value(u).expect("usage serialises"));
        (generated.spec, generated.generator, usage)
    };
    let code_problems = validate(&spec)?;
    if code_problems > 0 {
        r.log(&format!("the handler code breaks {code_problems} rule(s); the check step shows where")).await?;
    }
    let digest = store_spec(&r, b, &spec, &generator).await?;
    record_generator(&r, b, &generator, usage).await?;
    r.succeeded(&format!("spec ready: {} tool(s)", spec.tools.len()), Some(spec_summary(&spec, &digest))).await?;
    Ok(SpecRef { spec_digest: digest })
}

/// What the build log says about the configured generator, e.g. "offline (no ANTHROPIC_API_KEY)".
pub(crate) fn generator_label(acts: &BuildActivities) -> String {
    let name = acts.generator.name();
    match &acts.cfg.generator {
        bmm_core::config::GeneratorConfig::Offline => format!("{name} (no ANTHROPIC_API_KEY)"),
        _ => name,
    }
}

/// Refuse a spec that does not validate, naming every field at fault.
///
/// Handler code that breaks a code rule (`eval(`, `child_process`, …) is left
/// to the check step: it reports the place in the rendered source
/// (`file:line`) and, with a model generator, asks for a repair.
pub(crate) fn validate(spec: &bmm_spec::ToolSpec) -> Result<usize, StepError> {
    let Err(errors) = bmm_spec::validate(spec) else { return Ok(0) };
    let (code, other): (Vec<_>, Vec<_>) = errors.0.into_iter().partition(is_code_rule);
    if other.is_empty() {
        Ok(code.len())
    } else {
        Err(StepError::rejected(kind::INVALID_SPEC, bmm_spec::SpecErrors(other).to_string()))
    }
}

/// A validation error about a handler's code breaking a banned-code rule.
pub(crate) fn is_code_rule(e: &bmm_spec::FieldError) -> bool {
    e.field.ends_with(".handler.typescript")
        && e.message.strip_prefix("line ").is_some_and(|rest| {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            digits > 0 && rest[digits..].starts_with(": `")
        })
}

pub(crate) fn generate_error(e: GenerateError) -> StepError {
    if e.is_retryable() {
        StepError::transient(e.to_string())
    } else {
        StepError::rejected(kind::BAD_INPUT, e.to_string())
    }
}

/// Store `spec` (and its digest and generator) on the version; returns the digest.
pub(crate) async fn store_spec(
    r: &Reporter,
    b: &BuildInput,
    spec: &bmm_spec::ToolSpec,
    generator: &str,
) -> Result<String, StepError> {
    let digest = spec_digest_of(spec);
    let json = serde_json::to_value(spec).expect("spec serialises");
    let mut conn = r.conn().await?;
    diesel::update(server_versions::table.filter(server_versions::id.eq(b.version_id)))
        .filter(server_versions::org_id.eq(b.org_id))
        .set((
            server_versions::spec.eq(Some(json)),
            server_versions::spec_digest.eq(Some(&digest)),
            server_versions::generator.eq(generator),
        ))
        .execute(&mut conn)
        .await?;
    Ok(digest)
}

async fn record_generator(
    r: &Reporter,
    b: &BuildInput,
    generator: &str,
    usage: Option<serde_json::Value>,
) -> Result<(), StepError> {
    let mut conn = r.conn().await?;
    diesel::update(builds::table.filter(builds::id.eq(b.build_id)))
        .set((builds::generator.eq(generator), builds::usage.eq(usage)))
        .execute(&mut conn)
        .await?;
    Ok(())
}

async fn current_spec(
    conn: &mut diesel_async::AsyncPgConnection,
    b: &BuildInput,
) -> Result<Option<bmm_spec::ToolSpec>, StepError> {
    let spec: Option<Option<serde_json::Value>> = servers::table
        .inner_join(server_versions::table.on(servers::current_version_id.eq(server_versions::id.nullable())))
        .filter(servers::id.eq(b.server_id))
        .filter(servers::org_id.eq(b.org_id))
        .select(server_versions::spec)
        .first(conn)
        .await
        .optional()?;
    Ok(spec.flatten().and_then(|v| serde_json::from_value(v).ok()))
}

fn spec_summary(spec: &bmm_spec::ToolSpec, digest: &str) -> serde_json::Value {
    serde_json::json!({
        "specDigest": digest,
        "name": spec.name,
        "tools": spec.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_rules_are_told_apart_from_other_validation_errors() {
        let code = bmm_spec::FieldError::new("tools[0].handler.typescript", "line 2: `eval(` is not allowed (x): y");
        assert!(is_code_rule(&code));
        let empty = bmm_spec::FieldError::new("tools[0].handler.typescript", "must not be empty");
        assert!(!is_code_rule(&empty));
        let name = bmm_spec::FieldError::new("tools[0].name", "line 2: `eval(`");
        assert!(!is_code_rule(&name));
    }
}
