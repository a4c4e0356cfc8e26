//! generate: the version's spec, from the version row (the API stores the
//! reviewed preview's spec there; a previous attempt may have too), else from
//! the preview row itself. Never a new generation: what is built is what the
//! user reviewed, and what its credentials were checked against.

use bmm_db::models::Preview;
use bmm_db::schema::{builds, previews, server_versions};
use bmm_generator::GenerateError;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{load_version, spec_digest_of};
use crate::error::{StepError, kind};
use crate::model::{BuildInput, SpecRef};
use crate::report::Reporter;

pub async fn run(r: Reporter, b: &BuildInput) -> Result<SpecRef, StepError> {
    let mut conn = r.conn().await?;
    let version = load_version(&mut conn, b).await?;

    // The API stored the reviewed spec (or a previous attempt did; a rollback
    // or redeploy builds a version's spec again).
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
        r.log(&format!("spec of version {} (generator: {})", b.version, version.generator)).await?;
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

    drop(conn);
    // The spec the user reviewed, however old the preview: never a
    // regenerated one (a model could answer with other tools, and the
    // credentials were checked against this one).
    let spec: bmm_spec::ToolSpec = serde_json::from_value(preview.spec.clone())
        .map_err(|e| StepError::rejected(kind::INVALID_SPEC, format!("the preview's spec is not a tool spec: {e}")))?;
    let age = if preview.expires_at > Utc::now() { "" } else { ", past its cache time" };
    r.log(&format!("spec from the preview (generator: {}{age})", preview.generator)).await?;
    let (generator, usage) = (preview.generator.clone(), preview.usage.clone());
    let code_problems = validate(&spec)?;
    if code_problems > 0 {
        r.log(&format!("the handler code breaks {code_problems} rule(s); the check step shows where")).await?;
    }
    let digest = store_spec(&r, b, &spec, &generator).await?;
    record_generator(&r, b, &generator, usage).await?;
    r.succeeded(&format!("spec ready: {} tool(s)", spec.tools.len()), Some(spec_summary(&spec, &digest))).await?;
    Ok(SpecRef { spec_digest: digest })
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
