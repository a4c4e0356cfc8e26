//! The offline generator: deterministic, no network, no model.
//!
//! From an OpenAPI document it imports every operation as an HTTP tool. From
//! plain words it only makes tools it can really implement: `echo` and a few
//! recognisable text utilities. When it recognises nothing it makes `echo`
//! and says so, rather than pretending to have built what was asked.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use bmm_spec::{Annotations, Handler, SPEC_VERSION, Tool, ToolSpec};
use regex::Regex;
use serde_json::json;

use crate::input::check_request;
use crate::names::MAX_NAME;
use crate::{GenerateError, GenerateRequest, Generated, Generator, check, openapi};

/// The warning given when nothing in a description was recognised.
pub const ECHO_ONLY_WARNING: &str = "The offline generator only made an echo tool: it did not recognise anything \
     else it can implement in your description. Set ANTHROPIC_API_KEY (or BMM_OPENAI_BASE_URL) for real generation.";

/// A tool the offline generator can build from words.
struct Intent {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// Lower-case patterns that ask for it.
    triggers: &'static str,
    /// `true`: one `text` string argument; `false`: no arguments.
    takes_text: bool,
    typescript: &'static str,
    /// Whether two calls with the same input give the same output.
    idempotent: bool,
}

const INTENTS: &[Intent] = &[
    Intent {
        name: "echo",
        title: "Echo",
        description: "Returns the given text unchanged.",
        triggers: r"\becho(es|ed|ing)?\b|\brepeats? (it |them |the (text|message|input) )?back\b|\bparrot",
        takes_text: true,
        typescript: "const text = String(args[\"text\"] ?? \"\");\nreturn text;",
        idempotent: true,
    },
    Intent {
        name: "count_words",
        title: "Count words",
        description: "Counts the words, characters and lines in the given text.",
        triggers: r"\bword[ -]?counts?\b|\bcount(s|ing)? (the )?(number of )?words\b|\bhow many words\b",
        takes_text: true,
        typescript: "const text = String(args[\"text\"] ?? \"\");\n\
             const trimmed = text.trim();\n\
             const words = trimmed === \"\" ? 0 : trimmed.split(/\\s+/).length;\n\
             const lines = text === \"\" ? 0 : text.split(/\\r\\n|\\r|\\n/).length;\n\
             return { words, characters: Array.from(text).length, lines };",
        idempotent: true,
    },
    Intent {
        name: "to_uppercase",
        title: "To upper case",
        description: "Returns the given text in upper case.",
        triggers: r"\bupper[ -]?case\b|\ball caps\b",
        takes_text: true,
        typescript: "return String(args[\"text\"] ?? \"\").toUpperCase();",
        idempotent: true,
    },
    Intent {
        name: "to_lowercase",
        title: "To lower case",
        description: "Returns the given text in lower case.",
        triggers: r"\blower[ -]?case\b",
        takes_text: true,
        typescript: "return String(args[\"text\"] ?? \"\").toLowerCase();",
        idempotent: true,
    },
    Intent {
        name: "reverse_text",
        title: "Reverse text",
        description: "Returns the given text with its characters in reverse order.",
        triggers: r"\brevers(e|es|ed|ing)\b.{0,24}\b(texts?|strings?|words?|letters|characters|sentences?)\b|\bbackwards\b",
        takes_text: true,
        typescript: "return Array.from(String(args[\"text\"] ?? \"\")).reverse().join(\"\");",
        idempotent: true,
    },
    Intent {
        name: "current_time",
        title: "Current time",
        description: "Returns the current date and time in UTC, in ISO 8601 format.",
        triggers: r"\b(current|present) (utc )?(date and time|time|date)\b|\bwhat time it is\b|\bwhat time is it\b|\btime now\b|\butc time\b|\bcurrent timestamp\b|\btells? (me )?the time\b",
        takes_text: false,
        typescript: "return new Date().toISOString();",
        idempotent: false,
    },
    Intent {
        name: "generate_uuid",
        title: "Generate UUID",
        description: "Returns a new random UUID (version 4).",
        triggers: r"\buuids?\b|\bguids?\b",
        takes_text: false,
        typescript: "return crypto.randomUUID();",
        idempotent: false,
    },
    Intent {
        name: "base64_encode",
        title: "Base64 encode",
        description: "Encodes the given text (UTF-8) as base64.",
        triggers: r"\bbase ?64\b",
        takes_text: true,
        typescript: "return Buffer.from(String(args[\"text\"] ?? \"\"), \"utf8\").toString(\"base64\");",
        idempotent: true,
    },
    Intent {
        name: "base64_decode",
        title: "Base64 decode",
        description: "Decodes base64 text to UTF-8 text.",
        triggers: r"\bbase ?64\b",
        takes_text: true,
        typescript: "const text = String(args[\"text\"] ?? \"\").replace(/\\s+/g, \"\");\n\
             if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text)) {\n  throw new Error(\"the text is not base64\");\n}\n\
             return Buffer.from(text, \"base64\").toString(\"utf8\");",
        idempotent: true,
    },
];

static TRIGGERS: LazyLock<Vec<Regex>> =
    LazyLock::new(|| INTENTS.iter().map(|i| Regex::new(i.triggers).expect("intent regex")).collect());

/// The intents `text` asks for, in table order.
fn recognise(text: &str) -> Vec<&'static Intent> {
    let lower = text.to_lowercase();
    INTENTS.iter().zip(TRIGGERS.iter()).filter(|(_, re)| re.is_match(&lower)).map(|(i, _)| i).collect()
}

fn intent_tool(intent: &Intent) -> Tool {
    let input_schema = if intent.takes_text {
        json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "The text to work on."}},
            "required": ["text"],
            "additionalProperties": false,
        })
    } else {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    };
    Tool {
        name: intent.name.into(),
        title: Some(intent.title.into()),
        description: intent.description.into(),
        input_schema,
        annotations: Annotations {
            read_only_hint: Some(true),
            destructive_hint: Some(false),
            idempotent_hint: Some(intent.idempotent),
            open_world_hint: Some(false),
        },
        scopes: Vec::new(),
        handler: Handler::Code { typescript: intent.typescript.into() },
    }
}

/// The deterministic generator used when no model is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineGenerator;

#[async_trait::async_trait]
impl Generator for OfflineGenerator {
    async fn generate(&self, req: &GenerateRequest) -> Result<Generated, GenerateError> {
        self.generate_now(req)
    }

    fn name(&self) -> String {
        "offline".into()
    }
}

impl OfflineGenerator {
    /// The same as [`Generator::generate`], without the async wrapper (nothing here waits).
    pub fn generate_now(&self, req: &GenerateRequest) -> Result<Generated, GenerateError> {
        check_request(req)?;
        if req.repair.is_some() {
            return Err(GenerateError::bad_output(
                "the offline generator cannot correct a spec that failed the checks; \
                 set ANTHROPIC_API_KEY (or BMM_OPENAI_BASE_URL) to have a model repair it",
            ));
        }
        if let Some(doc) = &req.openapi {
            let imported = openapi::import(doc, &req.description)?;
            let errors = check::validate_spec(&imported.spec);
            if !errors.is_empty() {
                return Err(GenerateError::bad_input(
                    "openapi",
                    format!("the tools imported from it are not valid: {}", errors.join("; ")),
                ));
            }
            return Ok(Generated {
                spec: imported.spec,
                generator: "offline:openapi".into(),
                usage: None,
                warnings: imported.warnings,
            });
        }
        let (spec, warnings) = match (&req.base, &req.instruction) {
            (Some(base), Some(instruction)) => (iterate(base, instruction)?, Vec::new()),
            _ => from_description(&req.description),
        };
        let errors = check::validate_spec(&spec);
        if !errors.is_empty() {
            // Offline output is ours: an invalid spec here is a bug, not the user's fault.
            tracing::error!(?errors, "offline generator produced an invalid spec");
            return Err(GenerateError::bad_output(format!("internal error: {}", errors.join("; "))));
        }
        Ok(Generated { spec, generator: "offline".into(), usage: None, warnings })
    }
}

fn from_description(description: &str) -> (ToolSpec, Vec<String>) {
    let mut intents = recognise(description);
    let mut warnings = Vec::new();
    if intents.is_empty() {
        intents.push(&INTENTS[0]);
        warnings.push(ECHO_ONLY_WARNING.to_owned());
    } else {
        warnings.push(format!(
            "Generated offline: only the built-in tools recognised in your description were made ({}). \
             Anything else you described needs a model: set ANTHROPIC_API_KEY (or BMM_OPENAI_BASE_URL).",
            intents.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
        ));
    }
    let tools: Vec<Tool> = intents.iter().map(|i| intent_tool(i)).collect();
    (server(tools), warnings)
}

fn server(tools: Vec<Tool>) -> ToolSpec {
    let only_echo = tools.len() == 1 && tools[0].name == "echo";
    let summary = tools.iter().map(|t| format!("{} ({})", t.name, t.description.trim_end_matches('.').to_lowercase()));
    ToolSpec {
        spec_version: SPEC_VERSION.into(),
        name: if only_echo { "Echo".into() } else { "Text utilities".into() },
        description: format!("Generated offline. Tools: {}.", summary.collect::<Vec<_>>().join("; ")),
        tools,
        credentials: Vec::new(),
        allowed_hosts: Vec::new(),
    }
}

static REMOVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)^(?:please\s+)?(?:remove|delete|drop)\s+(?:the\s+)?(?:tool\s+)?[`'"]?([A-Za-z][A-Za-z0-9_-]*)[`'"]?(?:\s+tool)?$"#)
        .expect("regex")
});
static RENAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)^(?:please\s+)?rename\s+(?:the\s+)?(?:tool\s+)?[`'"]?([A-Za-z][A-Za-z0-9_-]*)[`'"]?(?:\s+tool)?\s+(?:to|as)\s+[`'"]?([A-Za-z][A-Za-z0-9_-]*)[`'"]?$"#)
        .expect("regex")
});
static ADD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:please\s+)?(?:also\s+)?(?:add|include|create)\b(.*)$").expect("regex"));

const CANNOT: &str = "the offline generator cannot apply free-form instructions. It understands \
     \"add a tool that counts words\" (echo, word count, upper/lower case, reverse text, current time, UUID, base64), \
     \"remove the NAME tool\" and \"rename NAME to NEW_NAME\", one per line or separated by \";\". \
     Set ANTHROPIC_API_KEY (or BMM_OPENAI_BASE_URL) for anything else";

/// Applies the instructions the offline generator understands, or refuses the whole instruction.
fn iterate(base: &ToolSpec, instruction: &str) -> Result<ToolSpec, GenerateError> {
    let mut spec = base.clone();
    let clauses: Vec<&str> = instruction
        .split(['\n', ';'])
        .map(|c| c.trim().trim_end_matches('.').trim())
        .filter(|c| !c.is_empty())
        .collect();
    let bad = |message: String| GenerateError::bad_input("instruction", message);
    for clause in clauses {
        if let Some(c) = RENAME.captures(clause) {
            let (from, to) = (&c[1], &c[2]);
            if spec.tool(to).is_some() {
                return Err(bad(format!("there is already a tool named {to}")));
            }
            if to.len() > MAX_NAME {
                return Err(bad(format!("{to} is longer than {MAX_NAME} characters")));
            }
            let tool = spec.tools.iter_mut().find(|t| t.name == from).ok_or_else(|| bad(no_such_tool(base, from)))?;
            tool.name = to.to_owned();
        } else if let Some(c) = REMOVE.captures(clause) {
            let name = &c[1];
            let before = spec.tools.len();
            spec.tools.retain(|t| t.name != name);
            if spec.tools.len() == before {
                return Err(bad(no_such_tool(&spec, name)));
            }
        } else if let Some(c) = ADD.captures(clause) {
            let intents = recognise(&c[1]);
            if intents.is_empty() {
                return Err(bad(CANNOT.to_owned()));
            }
            let present: BTreeSet<String> = spec.tools.iter().map(|t| t.name.clone()).collect();
            let new: Vec<Tool> = intents.iter().filter(|i| !present.contains(i.name)).map(|i| intent_tool(i)).collect();
            if new.is_empty() {
                return Err(bad(format!(
                    "the server already has {}",
                    intents.iter().map(|i| i.name).collect::<Vec<_>>().join(", ")
                )));
            }
            spec.tools.extend(new);
        } else {
            return Err(bad(CANNOT.to_owned()));
        }
    }
    if spec.tools.is_empty() {
        return Err(bad("that would leave the server without any tool".to_owned()));
    }
    // Credentials no remaining HTTP tool uses are no longer asked for.
    let used: String = spec.tools.iter().map(|t| serde_json::to_string(&t.handler).unwrap_or_default()).collect();
    spec.credentials.retain(|c| used.contains(&c.key));
    Ok(spec)
}

fn no_such_tool(spec: &ToolSpec, name: &str) -> String {
    let names: Vec<&str> = spec.tools.iter().map(|t| t.name.as_str()).collect();
    format!("there is no tool named {name}; the tools are {}", names.join(", "))
}

#[cfg(test)]
mod tests;
