//! check: render the spec into the runner template, check every handler's
//! syntax tree, scan the tree for banned patterns (the second layer),
//! type-check it with `tsc --noEmit` (in the sandbox), and store the source
//! by digest.
//!
//! Every finding and compiler message becomes an event with `file:line`.
//! With a model generator, the problems go back to it for at most
//! [`MAX_REPAIRS`] corrected specs before the step gives up.

use bmm_db::schema::server_versions;
use bmm_generator::GenerateRequest;
use bmm_spec::{CheckError, Rendered, Toolchain};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::generate::{generate_error, store_spec, validate};
use super::load_spec;
use crate::blobs;
use crate::build::BuildActivities;
use crate::error::{StepError, kind};
use crate::model::{CheckInput, SourceRef};
use crate::report::Reporter;

/// Repair round trips a model generator gets before the build fails.
pub const MAX_REPAIRS: usize = 2;
/// At most this many findings or diagnostics become events (a broken file can yield hundreds).
const MAX_EVENTS: usize = 50;

/// Why a rendered tree was refused.
struct Refusal {
    kind: &'static str,
    /// One line per problem, `file:line: message`.
    problems: Vec<String>,
}

pub async fn run(acts: &BuildActivities, r: Reporter, input: &CheckInput) -> Result<SourceRef, StepError> {
    let b = &input.build;
    let mut conn = r.conn().await?;
    let mut spec = load_spec(&mut conn, b, &input.spec_digest).await?;
    let mut spec_digest = input.spec_digest.clone();

    // A retried attempt after the source was stored: nothing left to check.
    let version = super::load_version(&mut conn, b).await?;
    drop(conn);
    if let Some(source) = version.source_digest.as_deref()
        && version.spec_digest.as_deref() == Some(spec_digest.as_str())
        && {
            let mut conn = r.conn().await?;
            blobs::exists(&mut conn, source).await?
        }
    {
        r.succeeded("source already checked", Some(serde_json::json!({ "sourceDigest": source }))).await?;
        return Ok(SourceRef { spec_digest, source_digest: source.to_owned() });
    }

    let toolchain = Toolchain::new(acts.cfg.toolchain_dir.clone());
    let can_repair = acts.generator.name() != "offline" && !acts.generator.name().starts_with("offline");
    let mut repairs = 0;
    loop {
        let rendered = bmm_spec::render(&spec);
        r.log(&format!("rendered {} file(s) from the spec", rendered.files.len())).await?;
        // Both layers report everything they find, then nothing refused runs.
        let refusal = match merge(syntax(&r, &spec).await?, scan(&r, &rendered).await?) {
            Some(refusal) => Some(refusal),
            None => match code_rules(&spec) {
                Some(refusal) => Some(refusal),
                None => typecheck(&r, &toolchain, &rendered).await?,
            },
        };
        let Some(refusal) = refusal else {
            let source_digest = store_source(&r, input, &rendered, &spec_digest).await?;
            r.succeeded(
                "the source is clean and type-checks",
                Some(serde_json::json!({ "sourceDigest": source_digest, "files": rendered.files.len() })),
            )
            .await?;
            return Ok(SourceRef { spec_digest, source_digest });
        };
        if !can_repair || repairs >= MAX_REPAIRS {
            return Err(StepError::rejected(refusal.kind, summary(&refusal)));
        }
        repairs += 1;
        r.log(&format!(
            "asking {} to repair {} problem(s) (attempt {repairs} of {MAX_REPAIRS})",
            acts.generator.name(),
            refusal.problems.len()
        ))
        .await?;
        let req = GenerateRequest {
            description: String::new(),
            openapi: None,
            base: Some(spec.clone()),
            instruction: None,
            repair: Some(refusal.problems.clone()),
        };
        let generated = acts.generator.generate(&req).await.map_err(generate_error)?;
        for w in &generated.warnings {
            r.warning(w).await?;
        }
        validate(&generated.spec)?;
        spec = generated.spec;
        spec_digest = store_spec(&r, b, &spec, &generated.generator).await?;
        r.log(&format!("the generator returned a repaired spec ({spec_digest})")).await?;
    }
}

/// Constructs the handlers' syntax trees refuse, one LOG event each with the
/// rendered file's `file:line:col`, the construct and where it is in the handler.
async fn syntax(r: &Reporter, spec: &bmm_spec::ToolSpec) -> Result<Option<Refusal>, StepError> {
    let findings = bmm_spec::check_spec(spec);
    if findings.is_empty() {
        r.log("syntax-tree check of the handlers: clean").await?;
        return Ok(None);
    }
    let mut problems = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        let line = format!(
            "{}:{}:{}: refused {} (tool {}, handler line {}): {}",
            f.file, f.file_line, f.finding.col, f.finding.construct, f.tool, f.finding.line, f.finding.why
        );
        if i < MAX_EVENTS {
            r.log_with(&line, serde_json::to_value(f).expect("finding serialises")).await?;
        }
        problems.push(line);
    }
    Ok(Some(Refusal { kind: kind::BANNED_CODE, problems }))
}

fn merge(a: Option<Refusal>, b: Option<Refusal>) -> Option<Refusal> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.problems.extend(b.problems);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Banned patterns, one LOG event each; a refusal when there are any.
async fn scan(r: &Reporter, rendered: &Rendered) -> Result<Option<Refusal>, StepError> {
    let findings = bmm_spec::scan(rendered);
    if findings.is_empty() {
        r.log("banned-pattern scan: clean").await?;
        return Ok(None);
    }
    let mut problems = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        let place = match rendered.locate(&f.file, f.line) {
            Some(loc) => format!(" (tool {}, handler line {})", loc.tool, loc.line),
            None => String::new(),
        };
        let line = format!("{}:{}: banned pattern `{}`{place}: {}", f.file, f.line, f.pattern, f.excerpt);
        if i < MAX_EVENTS {
            r.log_with(&line, serde_json::to_value(f).expect("finding serialises")).await?;
        }
        problems.push(line);
    }
    Ok(Some(Refusal { kind: kind::BANNED_CODE, problems }))
}

/// Whether the handlers pass the syntax-tree check and the rendered tree the
/// security scan and the spec's code rules, quietly (`check` reports the
/// findings): what `bundle` asks before it makes something that is deployed
/// before the type check has finished. Milliseconds, so no container ever
/// starts for code that has not passed both layers.
pub(crate) fn is_clean(spec: &bmm_spec::ToolSpec, rendered: &Rendered) -> bool {
    bmm_spec::check_spec(spec).is_empty() && bmm_spec::scan(rendered).is_empty() && code_rules(spec).is_none()
}

/// The spec's own code rules, in case a handler breaks one the rendered-tree
/// scan did not see (the scan normally reports these with `file:line`).
fn code_rules(spec: &bmm_spec::ToolSpec) -> Option<Refusal> {
    let Err(errors) = bmm_spec::validate(spec) else { return None };
    let problems: Vec<String> =
        errors.0.iter().filter(|e| super::generate::is_code_rule(e)).map(ToString::to_string).collect();
    (!problems.is_empty()).then_some(Refusal { kind: kind::BANNED_CODE, problems })
}

/// `tsc --noEmit` on the tree in a scratch directory.
async fn typecheck(r: &Reporter, toolchain: &Toolchain, rendered: &Rendered) -> Result<Option<Refusal>, StepError> {
    let dir = tempfile::tempdir().map_err(|e| StepError::transient(format!("no scratch directory: {e}")))?;
    bmm_spec::write_tree(rendered, dir.path()).map_err(|e| StepError::transient(e.to_string()))?;
    match toolchain.check(dir.path()).await {
        Ok(()) => {
            r.log("tsc --noEmit: no errors").await?;
            Ok(None)
        }
        Err(CheckError::Failed(failure)) => {
            let mut problems = Vec::new();
            for (i, d) in failure.diagnostics.iter().enumerate() {
                let place = match rendered.locate(&d.file, d.line) {
                    Some(loc) => format!(" (tool {}, handler line {})", loc.tool, loc.line),
                    None => String::new(),
                };
                let line = format!("{}:{}:{}: {}{place}", d.file, d.line, d.col, d.message);
                if i < MAX_EVENTS {
                    r.log_with(&line, serde_json::to_value(d).expect("diagnostic serialises")).await?;
                }
                problems.push(line);
            }
            Ok(Some(Refusal { kind: kind::TYPE_ERRORS, problems }))
        }
        // The toolchain itself failed (missing, timed out): not the spec's fault.
        Err(CheckError::Toolchain(e)) => Err(StepError::transient(format!("the TypeScript toolchain failed: {e}"))),
    }
}

fn summary(refusal: &Refusal) -> String {
    let what = if refusal.kind == kind::BANNED_CODE { "banned code" } else { "type errors" };
    let shown: Vec<&str> = refusal.problems.iter().take(3).map(String::as_str).collect();
    let more = refusal.problems.len().saturating_sub(shown.len());
    let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
    format!("{} problem(s) of {what}: {}{tail}", refusal.problems.len(), shown.join("; "))
}

async fn store_source(
    r: &Reporter,
    input: &CheckInput,
    rendered: &Rendered,
    spec_digest: &str,
) -> Result<String, StepError> {
    let mut conn = r.conn().await?;
    let digest = blobs::put(&mut conn, blobs::SOURCE_TREE, &source_bytes(rendered)).await?;
    diesel::update(server_versions::table.filter(server_versions::id.eq(input.build.version_id)))
        .filter(server_versions::org_id.eq(input.build.org_id))
        .filter(server_versions::spec_digest.eq(spec_digest))
        .set(server_versions::source_digest.eq(Some(&digest)))
        .execute(&mut conn)
        .await?;
    Ok(digest)
}

/// How a rendered tree is stored: its files as one JSON object.
pub(crate) fn source_bytes(rendered: &Rendered) -> Vec<u8> {
    serde_json::to_vec(&rendered.files).expect("files serialise")
}

/// The rendered tree stored under `digest`.
pub(crate) async fn load_source(r: &Reporter, digest: &str) -> Result<Rendered, StepError> {
    let mut conn = r.conn().await?;
    let bytes = blobs::get(&mut conn, digest).await?;
    let files = serde_json::from_slice(&bytes)
        .map_err(|e| StepError::rejected(kind::MISSING, format!("blob {digest} is not a source tree: {e}")))?;
    Ok(Rendered { files })
}
