use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::diff;

fn describe(d: &str) -> Result<Generated, GenerateError> {
    OfflineGenerator.generate_now(&GenerateRequest { description: d.into(), ..Default::default() })
}

fn names(spec: &ToolSpec) -> Vec<&str> {
    spec.tools.iter().map(|t| t.name.as_str()).collect()
}

fn iterate_with(base: &ToolSpec, instruction: &str) -> Result<Generated, GenerateError> {
    OfflineGenerator.generate_now(&GenerateRequest {
        base: Some(base.clone()),
        instruction: Some(instruction.into()),
        ..Default::default()
    })
}

#[test]
fn echo_when_asked_for() {
    let g = describe("A server with a tool that echoes back whatever I send it").unwrap();
    assert_eq!(g.generator, "offline");
    assert_eq!(names(&g.spec), ["echo"]);
    assert_eq!(g.spec.name, "Echo");
    assert_eq!(g.usage, None);
    let echo = g.spec.tool("echo").unwrap();
    assert_eq!(echo.input_schema["required"], json!(["text"]));
    assert_eq!(echo.annotations.read_only_hint, Some(true));
    assert_eq!(g.warnings.len(), 1);
    assert!(g.warnings[0].contains("(echo)") && g.warnings[0].contains("ANTHROPIC_API_KEY"), "{:?}", g.warnings);
}

#[test]
fn unrecognised_descriptions_get_echo_and_an_honest_warning() {
    let g = describe("Look up the weather forecast for a city and reverse geocode coordinates").unwrap();
    assert_eq!(names(&g.spec), ["echo"]);
    assert_eq!(g.warnings, [ECHO_ONLY_WARNING]);
    // Never a claim of what was not built.
    let text = g.spec.canonical_json().to_lowercase();
    assert!(!text.contains("weather") && !text.contains("geocod"), "{text}");
}

#[test]
fn recognisable_intents_become_working_tools() {
    let g = describe(
        "Text helpers: word count, convert to UPPERCASE or lowercase, reverse a string, tell me the current time, \
         make a UUID and base64 encode/decode",
    )
    .unwrap();
    assert_eq!(
        names(&g.spec),
        [
            "count_words",
            "to_uppercase",
            "to_lowercase",
            "reverse_text",
            "current_time",
            "generate_uuid",
            "base64_encode",
            "base64_decode"
        ]
    );
    assert_eq!(g.spec.name, "Text utilities");
    assert!(g.spec.credentials.is_empty() && g.spec.allowed_hosts.is_empty());
    assert!(g.spec.tools.iter().all(|t| matches!(t.handler, Handler::Code { .. })));
    assert_eq!(g.spec.tool("current_time").unwrap().input_schema["properties"], json!({}));
}

#[test]
fn generation_is_deterministic() {
    let d = "count words and echo";
    assert_eq!(describe(d).unwrap(), describe(d).unwrap());
    assert_eq!(describe(d).unwrap().spec.canonical_json(), describe(d).unwrap().spec.canonical_json());
}

#[test]
fn openapi_documents_are_imported() {
    let g = OfflineGenerator
        .generate_now(&GenerateRequest {
            description: "pets".into(),
            openapi: Some(include_str!("../../fixtures/petstore.yaml").into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(g.generator, "offline:openapi");
    assert_eq!(names(&g.spec), ["list_pets", "create_pets", "show_pet_by_id"]);
}

#[test]
fn bad_openapi_is_bad_input() {
    let e = OfflineGenerator
        .generate_now(&GenerateRequest { openapi: Some("swagger: '2.0'\n".into()), ..Default::default() })
        .unwrap_err();
    assert_eq!(e.field(), Some("openapi"));
    assert!(!e.is_retryable());
}

#[test]
fn empty_description_is_bad_input() {
    let e = describe("  ").unwrap_err();
    assert_eq!(e.field(), Some("description"));
}

#[test]
fn repair_is_refused_offline() {
    let base = describe("echo").unwrap().spec;
    let e = OfflineGenerator
        .generate_now(&GenerateRequest {
            base: Some(base),
            repair: Some(vec!["src/tools/echo.ts(1,1): error TS2304".into()]),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, GenerateError::BadOutput { .. }), "{e:?}");
}

#[test]
fn iterate_adds_removes_and_renames() {
    let base = describe("echo").unwrap().spec;
    let g = iterate_with(&base, "Add a tool that counts words").unwrap();
    assert_eq!(names(&g.spec), ["echo", "count_words"]);
    let g = iterate_with(&g.spec, "rename echo to say_back; remove the count_words tool.").unwrap();
    assert_eq!(names(&g.spec), ["say_back"]);
    let d = diff(&base, &g.spec);
    assert_eq!(d.added, ["say_back"]);
    assert_eq!(d.breaking, ["tool echo was removed"]);
}

#[test]
fn iterate_refuses_what_it_cannot_do() {
    let base = describe("echo and word count").unwrap().spec;
    let cases = [
        ("make the descriptions friendlier", "cannot apply free-form instructions"),
        ("add a tool that books flights", "cannot apply free-form instructions"),
        ("remove the weather tool", "there is no tool named weather; the tools are echo, count_words"),
        ("rename echo to count_words", "there is already a tool named count_words"),
        ("add an echo tool", "the server already has echo"),
        ("remove echo\nremove count_words", "without any tool"),
    ];
    for (instruction, expected) in cases {
        let e = iterate_with(&base, instruction).unwrap_err();
        assert_eq!(e.field(), Some("instruction"), "{instruction}");
        assert!(e.to_string().contains(expected), "{instruction}: {e}");
    }
}

#[test]
fn iterate_drops_credentials_no_tool_uses() {
    let doc = include_str!("../../fixtures/train-travel.yaml");
    let imported = crate::openapi::import(doc, "").unwrap().spec;
    let mut keep_one = imported.clone();
    keep_one.tools.retain(|t| t.name == "get_stations");
    let g = iterate_with(&keep_one, "add an echo tool").unwrap();
    assert_eq!(g.spec.credentials.len(), 1, "get_stations still needs the OAuth token");
    let g = iterate_with(&g.spec, "remove get_stations").unwrap();
    assert!(g.spec.credentials.is_empty());
}

/// The folder with the node toolchain: `BMM_TOOLCHAIN_DIR`, else `.bmm/toolchain` of the checkout.
fn toolchain_dir() -> PathBuf {
    std::env::var_os("BMM_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.bmm/toolchain"))
}

/// Every built-in handler type-checks under the runner template's strict tsconfig
/// against its handler contract (`runtime/types.ts`).
#[test]
fn builtin_handlers_type_check_under_strict_typescript() {
    let toolchain = toolchain_dir();
    let tsc = toolchain.join("node_modules/.bin/tsc");
    assert!(tsc.exists(), "no TypeScript at {} — run `scripts/stack.sh toolchain`", tsc.display());
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner-template");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src/runtime")).unwrap();
    std::fs::copy(template.join("tsconfig.json"), dir.path().join("tsconfig.json")).unwrap();
    std::fs::copy(template.join("src/runtime/types.ts"), dir.path().join("src/runtime/types.ts")).unwrap();
    std::os::unix::fs::symlink(toolchain.join("node_modules"), dir.path().join("node_modules")).unwrap();
    let mut source = String::from("import type { ToolArgs, ToolContext } from \"./runtime/types.js\";\n");
    for intent in INTENTS {
        source.push_str(&format!(
            "export const {}_handler = async (args: ToolArgs, ctx: ToolContext): Promise<unknown> => {{\n{}\n}};\n",
            intent.name, intent.typescript
        ));
    }
    std::fs::write(dir.path().join("src/handlers.ts"), source).unwrap();
    let out = Command::new(&tsc).arg("--noEmit").arg("-p").arg(dir.path()).output().expect("tsc runs");
    assert!(
        out.status.success(),
        "tsc failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
