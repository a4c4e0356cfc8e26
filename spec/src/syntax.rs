//! The syntax-tree check of handler code: every `handler.typescript` is
//! parsed (oxc) as the body of the handler's function and refused, with the
//! line and the construct named, when it
//!
//! - does not parse as a function body, or closes the function early so that
//!   code after it runs at module level;
//! - imports or exports anything (`import`/`export` declarations, `import()`,
//!   import attributes, `import.meta`, `import x = require(…)`, `import("x")`
//!   types, namespace and module declarations);
//! - silences the compiler (`@ts-ignore`, `@ts-nocheck`, `@ts-expect-error`)
//!   or carries a triple-slash directive;
//! - reads a free identifier (one it does not declare itself) that is not on
//!   [`ALLOWED_GLOBALS`]: handlers reach the world through `args` and `ctx`
//!   and a fixed set of the standard library's data types, nothing ambient
//!   (`process`, `globalThis`, `require`, `Function`, `eval`, `Reflect`,
//!   `Proxy`, `WebAssembly`, `fetch`, … are simply not on the list);
//! - names `constructor`, `__proto__`, `prototype`, `caller`, `callee` or the
//!   legacy accessor helpers as a property (`x.constructor`,
//!   `x["constructor"]`, `{ constructor: c } = x`), or builds a computed key
//!   from strings at the site (`x["con" + "structor"]`, `` x[`${a}`] ``,
//!   `x[[…].join("")]`);
//! - uses `Object` other than through its data helpers ([`OBJECT_MEMBERS`]).
//!
//! What it cannot see: a computed key held in a variable (`x[k]`) is allowed,
//! so a key computed elsewhere can still name `constructor` at run time. The
//! regex scan stays as a second layer; the container's isolation is the wall.

use oxc_allocator::Allocator;
use oxc_ast::ast::{
    BinaryOperator, Comment, ComputedMemberExpression, Expression, IdentifierReference, MethodDefinition,
    MethodDefinitionKind, PropertyKey, Statement, StaticMemberExpression,
};
use oxc_ast_visit::{Visit, walk};
use oxc_parser::Parser;
use oxc_semantic::{Scoping, SemanticBuilder};
use oxc_span::{GetSpan, SourceType, Span};
use serde::{Deserialize, Serialize};

use crate::model::{Handler, ToolSpec};

/// Free identifiers a handler may read: its two parameters, value
/// constants, and globals that are data types or pure functions with no way
/// to the process, the module system, code evaluation or the network.
/// `Buffer` and `crypto` (Web Crypto) are here because the offline generator's
/// own handlers use them; timers because waiting is ordinary.
pub const ALLOWED_GLOBALS: &[&str] = &[
    "args",
    "ctx",
    "undefined",
    "NaN",
    "Infinity",
    // Data types and their constructors.
    "JSON",
    "Math",
    "Date",
    "String",
    "Number",
    "Boolean",
    "BigInt",
    "Symbol",
    "Array",
    "Map",
    "Set",
    "WeakMap",
    "WeakSet",
    "Promise",
    "RegExp",
    "Intl",
    "ArrayBuffer",
    "DataView",
    "Uint8Array",
    "Uint8ClampedArray",
    "Int8Array",
    "Uint16Array",
    "Int16Array",
    "Uint32Array",
    "Int32Array",
    "Float32Array",
    "Float64Array",
    "BigInt64Array",
    "BigUint64Array",
    "Buffer",
    // Errors.
    "Error",
    "TypeError",
    "RangeError",
    "SyntaxError",
    "URIError",
    "EvalError",
    "ReferenceError",
    "AggregateError",
    // Text, URLs and encodings.
    "URL",
    "URLSearchParams",
    "TextEncoder",
    "TextDecoder",
    "encodeURIComponent",
    "decodeURIComponent",
    "encodeURI",
    "decodeURI",
    "atob",
    "btoa",
    "parseInt",
    "parseFloat",
    "isNaN",
    "isFinite",
    "structuredClone",
    // Values of the Fetch API (ctx.fetch takes and returns them; none sends anything).
    "Headers",
    "Request",
    "Response",
    "FormData",
    "Blob",
    "AbortController",
    "AbortSignal",
    // Randomness and hashing (Web Crypto).
    "crypto",
    // Waiting.
    "setTimeout",
    "clearTimeout",
    "queueMicrotask",
];

/// The members of `Object` a handler may call: data helpers only (no
/// prototypes, no property descriptors, which lead to the constructors).
pub const OBJECT_MEMBERS: &[&str] =
    &["keys", "values", "entries", "fromEntries", "assign", "freeze", "isFrozen", "hasOwn", "is", "groupBy"];

/// Property names that lead from any value to its constructor and so to the
/// `Function` constructor, or rewrite prototypes.
pub const BANNED_PROPERTIES: &[&str] = &[
    "constructor",
    "__proto__",
    "prototype",
    "caller",
    "callee",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
];

/// Methods that assemble a string out of pieces (how a hidden name is spelled
/// out): a computed key made by one is refused. Ordinary conversions of an
/// argument (`String(x)`, `.toLowerCase()`) are not: a key from `args` is data.
const STRING_BUILDERS: &[&str] = &[
    "join",
    "concat",
    "fromCharCode",
    "fromCodePoint",
    "raw",
    "replace",
    "replaceAll",
    "reverse",
    "repeat",
    "padStart",
    "padEnd",
    "decode",
];

/// Why the usual escape hatches are refused (the allow-list refuses them anyway).
fn why_not(name: &str) -> &'static str {
    match name {
        "process" => "handlers read credentials from ctx.credentials, never the process",
        "globalThis" | "global" | "window" | "self" => "handlers may not reach the global object",
        "require" | "module" | "exports" | "__dirname" | "__filename" => "handlers cannot load modules",
        "Function" | "eval" => "evaluates code at run time",
        "Reflect" | "Proxy" => "reflection reaches constructors and prototypes",
        "WebAssembly" => "compiles and runs code at run time",
        "fetch" | "XMLHttpRequest" | "WebSocket" | "EventSource" => {
            "use ctx.fetch, which is limited to the allowed hosts"
        }
        "Object" => "only Object's data helpers may be used (keys, values, entries, fromEntries, assign, …)",
        _ => "not a global handlers may use: they get the world through args and ctx",
    }
}

/// One refused construct in a handler's code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerFinding {
    /// 1-based line within the handler's code.
    pub line: u32,
    /// 1-based column (in bytes) within that line.
    pub col: u32,
    /// What was found, e.g. `import declaration` or `` `process` ``.
    pub construct: String,
    pub why: String,
}

impl std::fmt::Display for HandlerFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} is not allowed ({})", self.line, self.construct, self.why)
    }
}

/// A finding of one tool's handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFinding {
    pub tool: String,
    /// The rendered file, `src/tools/<tool>.ts`.
    pub file: String,
    /// Line in the rendered file.
    pub file_line: u32,
    pub finding: HandlerFinding,
}

/// The wrapper the body is parsed in: the handler's own signature (without
/// types, which do not matter to the syntax), so `args` and `ctx` are bound.
const PRELUDE: &str = "async function __bmm_handler(args, ctx) {\n";

/// Every code handler of the spec, checked.
pub fn check_spec(spec: &ToolSpec) -> Vec<ToolFinding> {
    let mut out = Vec::new();
    for tool in &spec.tools {
        if let Handler::Code { typescript } = &tool.handler {
            for finding in check_handler(typescript) {
                out.push(ToolFinding {
                    tool: tool.name.clone(),
                    file: format!("src/tools/{}.ts", tool.name),
                    file_line: crate::render::HANDLER_FIRST_LINE + finding.line - 1,
                    finding,
                });
            }
        }
    }
    out
}

/// Check one handler body; empty when it may be built.
pub fn check_handler(code: &str) -> Vec<HandlerFinding> {
    // The same text the renderer places in the function.
    let code = crate::render::normalise_code(code);
    let source = format!("{PRELUDE}{code}}}\n");
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, &source, SourceType::ts()).parse();
    let mut c = Checker { source: &source, findings: Vec::new(), scoping: None, exempt: Vec::new() };

    for comment in parsed.program.comments.iter() {
        c.comment(comment);
    }
    if parsed.panicked || !parsed.diagnostics.is_empty() {
        for d in parsed.diagnostics.iter() {
            let at = d.labels.first().map_or(PRELUDE.len() as u32, |l| l.offset());
            c.add(at, "a syntax error".into(), d.message.to_string());
        }
        return c.finish();
    }

    // The body must be the function's and nothing else's: one statement, the
    // wrapper's function, ending at the brace the wrapper added.
    let body = &parsed.program.body;
    let end = source.len() as u32 - 1;
    match body.first() {
        Some(Statement::FunctionDeclaration(f)) if f.span.end == end && body.len() == 1 => {}
        Some(Statement::FunctionDeclaration(f)) => {
            let escaped = body.get(1).map_or(f.span.end, |s| s.span().start);
            c.add(
                escaped,
                "code outside the handler's function body".into(),
                "the body closes its function early, so what follows would run when the server loads".into(),
            );
        }
        _ => c.add(PRELUDE.len() as u32, "a body that is not a function body".into(), "it does not parse".into()),
    }

    let semantic = SemanticBuilder::new().build(&parsed.program);
    c.scoping = Some(semantic.semantic.scoping());
    c.visit_program(&parsed.program);
    c.finish()
}

struct Checker<'s> {
    source: &'s str,
    findings: Vec<HandlerFinding>,
    scoping: Option<&'s Scoping>,
    /// Spans already judged (`Object` of an allowed member, a class's constructor key).
    exempt: Vec<Span>,
}

impl Checker<'_> {
    fn add(&mut self, offset: u32, construct: String, why: String) {
        let before = &self.source[..(offset as usize).min(self.source.len())];
        let wrapper_line = before.matches('\n').count() as u32 + 1;
        let col = before.rfind('\n').map_or(before.len() + 1, |nl| before.len() - nl) as u32;
        // Line 1 is the wrapper's own; the body starts on line 2.
        let line = wrapper_line.saturating_sub(1).max(1);
        self.findings.push(HandlerFinding { line, col, construct, why });
    }

    fn finish(mut self) -> Vec<HandlerFinding> {
        self.findings.sort_by_key(|f| (f.line, f.col));
        self.findings.dedup();
        self.findings
    }

    fn comment(&mut self, comment: &Comment) {
        let text = comment.content_span().source_text(self.source);
        let lower = text.to_ascii_lowercase();
        for directive in ["@ts-ignore", "@ts-nocheck", "@ts-expect-error"] {
            if lower.contains(directive) {
                self.add(
                    comment.span.start,
                    format!("a `{directive}` comment"),
                    "handler code may not silence the type checker".into(),
                );
            }
        }
        if comment.is_line() && text.trim_start().starts_with("/ <reference") {
            self.add(
                comment.span.start,
                "a triple-slash directive".into(),
                "it changes what the compiler loads".into(),
            );
        }
    }

    fn refuse(&mut self, span: Span, construct: &str, why: &str) {
        self.add(span.start, construct.to_owned(), why.to_owned());
    }

    /// Whether `ident` is a free (undeclared) runtime reference.
    fn is_free_value(&self, ident: &IdentifierReference) -> bool {
        let (Some(scoping), Some(id)) = (self.scoping, ident.reference_id.get()) else { return true };
        let reference = scoping.get_reference(id);
        reference.symbol_id().is_none() && reference.is_value()
    }

    /// A computed key that spells a banned name, or builds a string at the site.
    fn key_problem(&self, key: &Expression) -> Option<String> {
        match key.get_inner_expression() {
            Expression::StringLiteral(s) => {
                BANNED_PROPERTIES.contains(&s.value.as_str()).then(|| format!("the property `{}`", s.value))
            }
            Expression::TemplateLiteral(t) => match t.single_quasi() {
                Some(q) => BANNED_PROPERTIES.contains(&q.as_str()).then(|| format!("the property `{q}`")),
                None => Some("a computed key built from a template".into()),
            },
            Expression::BinaryExpression(b) if b.operator == BinaryOperator::Addition && builds_string(key) => {
                Some("a computed key built by string concatenation".into())
            }
            Expression::CallExpression(call) => {
                let builder = match call.callee.get_inner_expression() {
                    Expression::StaticMemberExpression(m) => STRING_BUILDERS.contains(&m.property.name.as_str()),
                    Expression::Identifier(i) => i.name == "atob",
                    _ => false,
                };
                builder.then(|| "a computed key built by a string function".into())
            }
            Expression::TaggedTemplateExpression(_) => Some("a computed key built from a template".into()),
            _ => None,
        }
    }
}

/// Whether an expression is, or adds, a string or template literal.
fn builds_string(e: &Expression) -> bool {
    match e.get_inner_expression() {
        Expression::StringLiteral(_) | Expression::TemplateLiteral(_) => true,
        Expression::BinaryExpression(b) if b.operator == BinaryOperator::Addition => {
            builds_string(&b.left) || builds_string(&b.right)
        }
        _ => false,
    }
}

const NO_MODULES: &str = "handlers cannot import or export modules";

impl<'a> Visit<'a> for Checker<'_> {
    fn visit_module_declaration(&mut self, it: &oxc_ast::ast::ModuleDeclaration<'a>) {
        use oxc_ast::ast::ModuleDeclaration as M;
        let construct = match it {
            M::ImportDeclaration(_) => "an import declaration",
            M::TSExportAssignment(_) => "`export =`",
            M::TSNamespaceExportDeclaration(_) => "`export as namespace`",
            _ => "an export declaration",
        };
        self.refuse(it.span(), construct, NO_MODULES);
        walk::walk_module_declaration(self, it);
    }

    fn visit_with_clause(&mut self, it: &oxc_ast::ast::WithClause<'a>) {
        self.refuse(it.span, "import attributes", "they make the bundler inline files (`with { type: … }`)");
        walk::walk_with_clause(self, it);
    }

    fn visit_import_expression(&mut self, it: &oxc_ast::ast::ImportExpression<'a>) {
        self.refuse(it.span, "`import()`", NO_MODULES);
        walk::walk_import_expression(self, it);
    }

    fn visit_import_meta(&mut self, it: &oxc_ast::ast::ImportMeta) {
        self.refuse(it.span, "`import.meta`", "it reveals and resolves module paths");
    }

    fn visit_ts_import_type(&mut self, it: &oxc_ast::ast::TSImportType<'a>) {
        self.refuse(it.span, "an `import(…)` type", NO_MODULES);
        walk::walk_ts_import_type(self, it);
    }

    fn visit_ts_import_equals_declaration(&mut self, it: &oxc_ast::ast::TSImportEqualsDeclaration<'a>) {
        self.refuse(it.span, "`import … = require(…)`", NO_MODULES);
        walk::walk_ts_import_equals_declaration(self, it);
    }

    fn visit_ts_namespace_declaration(&mut self, it: &oxc_ast::ast::TSNamespaceDeclaration<'a>) {
        self.refuse(it.span, "a namespace declaration", "it declares names outside the handler");
        walk::walk_ts_namespace_declaration(self, it);
    }

    fn visit_ts_global_declaration(&mut self, it: &oxc_ast::ast::TSGlobalDeclaration<'a>) {
        self.refuse(it.span, "`declare global`", "it declares names outside the handler");
        walk::walk_ts_global_declaration(self, it);
    }

    fn visit_static_member_expression(&mut self, it: &StaticMemberExpression<'a>) {
        let name = it.property.name.as_str();
        if BANNED_PROPERTIES.contains(&name) {
            self.add(
                it.property.span.start,
                format!("the property `{name}`"),
                "it leads to constructors (and so to the Function constructor) or rewrites prototypes".into(),
            );
        }
        if let Expression::Identifier(object) = it.object.get_inner_expression()
            && object.name == "Object"
            && self.is_free_value(object)
        {
            self.exempt.push(object.span);
            if !OBJECT_MEMBERS.contains(&name) {
                self.add(object.span.start, format!("`Object.{name}`"), why_not("Object").into());
            }
        }
        walk::walk_static_member_expression(self, it);
    }

    fn visit_computed_member_expression(&mut self, it: &ComputedMemberExpression<'a>) {
        if let Some(problem) = self.key_problem(&it.expression) {
            self.add(
                it.expression.span().start,
                problem,
                "it can name `constructor` and so reach the Function constructor".into(),
            );
        }
        walk::walk_computed_member_expression(self, it);
    }

    fn visit_method_definition(&mut self, it: &MethodDefinition<'a>) {
        // A class's own `constructor() {}` declares, it reaches nothing.
        if it.kind == MethodDefinitionKind::Constructor {
            self.exempt.push(it.key.span());
        }
        walk::walk_method_definition(self, it);
    }

    fn visit_property_key(&mut self, it: &PropertyKey<'a>) {
        if !self.exempt.contains(&it.span()) {
            if let Some(name) = it.static_name()
                && BANNED_PROPERTIES.contains(&name.as_ref())
            {
                self.add(
                    it.span().start,
                    format!("the property `{name}`"),
                    "it leads to constructors (and so to the Function constructor) or rewrites prototypes".into(),
                );
            } else if let Some(key) = it.as_expression()
                && let Some(problem) = self.key_problem(key)
            {
                self.add(
                    it.span().start,
                    problem,
                    "it can name `constructor` and so reach the Function constructor".into(),
                );
            }
        }
        walk::walk_property_key(self, it);
    }

    fn visit_identifier_reference(&mut self, it: &IdentifierReference<'a>) {
        if self.exempt.contains(&it.span) || !self.is_free_value(it) {
            return;
        }
        let name = it.name.as_str();
        if !ALLOWED_GLOBALS.contains(&name) {
            self.add(it.span.start, format!("`{name}`"), why_not(name).into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constructs(code: &str) -> Vec<String> {
        check_handler(code).into_iter().map(|f| f.construct).collect()
    }

    #[track_caller]
    fn refused(code: &str, construct: &str, line: u32) {
        let found = check_handler(code);
        assert!(
            found.iter().any(|f| f.construct.contains(construct) && f.line == line),
            "{code:?}: expected `{construct}` on line {line}, got {found:?}"
        );
    }

    #[test]
    fn the_environ_attack_of_issue_13_is_refused_construct_by_construct() {
        let code = "return new TextDecoder().decode(leak);\n}\n// @ts-ignore\n\
                    ; import leak from \"/proc/self/environ\" with { type: \"bytes\" };\nexport function rest() {\n";
        refused(code, "code outside the handler's function body", 4);
        refused(code, "`@ts-ignore`", 3);
        refused(code, "an import declaration", 4);
        refused(code, "import attributes", 4);
        refused(code, "an export declaration", 5);
    }

    #[test]
    fn each_escape_of_the_issue_is_refused() {
        refused("return 1;\n}\n; import * as net from \"net\"\nfunction x() {", "an import declaration", 3);
        refused("const F = Function; return F(\"return 1\")();", "`Function`", 1);
        refused("const x = {};\nreturn x[\"con\" + \"structor\"];", "string concatenation", 2);
        refused("return eval(\"1\");", "`eval`", 1);
    }

    #[test]
    fn each_construct_is_refused_with_its_line() {
        let cases: &[(&str, &str, u32)] = &[
            ("const m = await import(\"node:fs\");", "`import()`", 1),
            ("return import.meta.url;", "`import.meta`", 1),
            ("// @ts-nocheck\nreturn 1;", "`@ts-nocheck`", 1),
            ("const a = 1;\n/* @ts-expect-error */ const n: number = \"x\";", "`@ts-expect-error`", 2),
            ("/// <reference types=\"node\" />\nreturn 1;", "a triple-slash directive", 1),
            ("type T = import(\"fs\").Stats; return 1;", "an `import(…)` type", 1),
            ("return process.env.SECRET;", "`process`", 1),
            ("const a = 1;\nreturn globalThis;", "`globalThis`", 2),
            ("return global.x;", "`global`", 1),
            ("return require(\"fs\");", "`require`", 1),
            ("return module.exports;", "`module`", 1),
            ("return Reflect.ownKeys(args);", "`Reflect`", 1),
            ("return new Proxy({}, {});", "`Proxy`", 1),
            ("return WebAssembly.compile(new Uint8Array());", "`WebAssembly`", 1),
            ("return fetch(\"https://x.example\");", "`fetch`", 1),
            ("return new WebSocket(\"wss://x.example\");", "`WebSocket`", 1),
            ("return (() => 1).constructor;", "the property `constructor`", 1),
            ("return args[\"constructor\"];", "the property `constructor`", 1),
            ("return args[`__proto__`];", "the property `__proto__`", 1),
            ("return String.prototype;", "the property `prototype`", 1),
            ("const { constructor: C } = () => 1; return C;", "the property `constructor`", 1),
            ("return { __proto__: null };", "the property `__proto__`", 1),
            ("const k = \"x\"; return args[`${k}y`];", "built from a template", 1),
            ("return args[[\"con\", \"structor\"].join(\"\")];", "built by a string function", 1),
            ("return Object.getPrototypeOf(args);", "`Object.getPrototypeOf`", 1),
            ("const O = Object; return O;", "`Object`", 1),
            ("undeclared = 1; return 1;", "`undeclared`", 1),
            ("return (args; ", "a syntax error", 1),
            ("return 1;\n}", "a syntax error", 3),
        ];
        for (code, construct, line) in cases {
            refused(code, construct, *line);
        }
    }

    #[test]
    fn ordinary_handler_code_passes() {
        for code in [
            "return String(args.text);",
            "const text = String(args[\"text\"] ?? \"\");\nreturn text;",
            "return Array.from(String(args[\"text\"] ?? \"\")).reverse().join(\"\");",
            "return new Date().toISOString();",
            "return crypto.randomUUID();",
            "return Buffer.from(String(args[\"text\"] ?? \"\"), \"utf8\").toString(\"base64\");",
            "const r = await ctx.fetch(`https://api.example.com/x?q=${encodeURIComponent(String(args.q))}`);\n\
             if (!r.ok) throw new Error(`upstream ${r.status}`);\nconst body = (await r.json()) as Record<string, unknown>;\n\
             return Object.entries(body).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(\"\\n\");",
            "await new Promise((r) => setTimeout(r, 800));\nreturn 'done';",
            "const units: Record<string, number> = { c: 1, f: 2 };\nreturn units[String(args.unit)] ?? 0;",
            "const xs = [1, 2, 3];\nlet sum = 0;\nfor (let i = 0; i < xs.length; i++) sum += xs[i + 0];\nreturn sum;",
            "class Box { constructor(readonly v: number) {} get double() { return this.v * 2; } }\n\
             return new Box(2).double;",
            "const process = (s: string) => s.trim();\nreturn process(String(args.text));",
            "ctx.log(\"called\", { n: 1 });\nreturn `token has ${ctx.credentials[\"API_TOKEN\"].length} characters`;",
            "if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(String(args.text))) {\n  throw new Error(\"not base64\");\n}\nreturn 1;",
            "const u = new URL(\"https://api.example.com\"); u.searchParams.set(\"a\", \"b\"); return u.toString();",
            "let x: typeof args = args; return Math.max(1, Number(x.n));",
        ] {
            assert_eq!(constructs(code), Vec::<String>::new(), "{code}");
        }
    }

    #[test]
    fn findings_map_to_the_rendered_file() {
        let mut spec = crate::testing::echo_spec();
        spec.tools[0].handler = Handler::Code { typescript: "const a = 1;\nreturn process.env.X;".into() };
        let found = check_spec(&spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].file, "src/tools/echo.ts");
        assert_eq!(found[0].file_line, 8);
        let rendered = crate::render(&spec);
        assert_eq!(rendered.files["src/tools/echo.ts"].lines().nth(7), Some("return process.env.X;"));
        assert_eq!(found[0].finding.col, 8);
        assert_eq!(rendered.locate("src/tools/echo.ts", 8).map(|l| l.line), Some(2));
    }
}
