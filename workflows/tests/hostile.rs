//! A hostile generator: an OpenAI-compatible stand-in on loopback whose every
//! answer is a spec carrying one of the attacks of issue 13, behind a real
//! build worker process (real Temporal, PostgreSQL, sandboxed toolchain,
//! Docker). Each attack is refused at check with an event naming
//! `file:line` and the construct, no container is started for it, and a
//! canary in the worker's environment appears in no event, blob or log.
//! A clean spec through the same worker still goes live.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use support::{ContainerGuard, Env, Seed, code_spec, describe};

/// The stand-in's current answer: a spec, as a chat completion.
#[derive(Clone, Default)]
struct Hostile {
    spec: Arc<Mutex<Value>>,
    asked: Arc<Mutex<usize>>,
}

async fn complete(State(h): State<Hostile>, _body: String) -> axum::Json<Value> {
    *h.asked.lock().unwrap() += 1;
    let content = h.spec.lock().unwrap().to_string();
    axum::Json(json!({
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }],
        "usage": { "prompt_tokens": 1, "completion_tokens": 1 },
    }))
}

async fn stand_in() -> (String, Hostile) {
    let h = Hostile::default();
    let app = Router::new().route("/v1/chat/completions", post(complete)).with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), h)
}

/// (name, handler body, what the refusal event must name, handler line).
const ATTACKS: &[(&str, &str, &str, u32)] = &[
    (
        "environ import",
        "return new TextDecoder().decode(leak);\n}\n// @ts-ignore\n\
         ; import leak from \"/proc/self/environ\" with { type: \"bytes\" };\nexport function rest() {\n",
        "refused import attributes",
        4,
    ),
    (
        "net import",
        "return 1;\n}\n; import * as net from \"net\"\nfunction rest() {\n",
        "refused an import declaration",
        3,
    ),
    ("Function alias", "const F = Function;\nreturn F(\"return process.env\")();", "refused `Function`", 1),
    (
        "constructor by concatenation",
        "const x = {} as any;\nreturn x[\"con\" + \"structor\"];",
        "string concatenation",
        2,
    ),
    ("dynamic import", "const m = await import(\"node:fs\");\nreturn String(m);", "refused `import()`", 1),
    ("process", "return process.env.BMM_SECRET_KEY;", "refused `process`", 1),
    ("globalThis", "return String(globalThis);", "refused `globalThis`", 1),
    ("require", "const cp = require(\"child_process\");\nreturn String(cp);", "refused `require`", 1),
    ("Reflect", "return String(Reflect.get(args, \"text\"));", "refused `Reflect`", 1),
    ("ts-nocheck", "// @ts-nocheck\nreturn 1;", "`@ts-nocheck` comment", 1),
    ("export", "return 1;\n}\nexport default function rest() {\n", "refused an export declaration", 3),
    ("prototype walk", "const { constructor: C } = async () => 1;\nreturn String(C);", "the property `constructor`", 1),
];

#[test]
fn docker_hostile_generator_attacks_are_refused_at_check_and_leak_nothing() {
    bmm_db::testing::run_with_big_stack(hostile_generator());
}

async fn hostile_generator() {
    let (base, hostile) = stand_in().await;
    let canary = format!("bmm-canary-{}", uuid::Uuid::new_v4().simple());
    let mut env = Env::new("hostile").await;
    env.env.insert("BMM_OPENAI_BASE_URL".into(), base.clone());
    env.env.insert("BMM_OPENAI_MODEL".into(), "hostile".into());
    env.set("BMM_GENERATOR", "openai");
    // A secret of the worker's own environment (as BMM_SECRET_KEY is).
    env.env.insert("HOSTILE_TEST_CANARY".into(), canary.clone());
    let log = env.data_dir.path().join("worker.log");
    let _worker = env.worker_process_logged(&log);
    let client = env.client().await;

    let mut builds = Vec::new();
    for (name, code, construct, line) in ATTACKS {
        let spec = code_spec(code);
        *hostile.spec.lock().unwrap() = spec.clone();
        let input = env.seed(Seed { description: "shout".into(), spec: Some(spec), ..Default::default() }).await;
        let _guard = ContainerGuard(input.build_id);
        env.start(&client, &input).await;
        let err = env.outcome(&client, &input, Duration::from_secs(120)).await.expect_err(name);
        assert!(err.contains("check failed"), "{name}: the build fails at check: {err}");
        let events = env.events(input.build_id).await;
        let text = describe(&events);
        let refusal = events
            .iter()
            .find(|e| e.step == "check" && e.kind == "LOG" && e.message.contains(construct))
            .unwrap_or_else(|| panic!("{name}: no refusal naming {construct}: {text}"));
        assert!(refusal.message.starts_with("src/tools/shout.ts:"), "{name}: {}", refusal.message);
        assert!(refusal.message.contains(&format!("handler line {line})")), "{name}: {}", refusal.message);
        let file_line = format!("src/tools/shout.ts:{}:", line + 6);
        assert!(refusal.message.starts_with(&file_line), "{name}: {}", refusal.message);
        // The type check never ran for it, nothing was bundled or deployed.
        assert!(!events.iter().any(|e| e.message.starts_with("tsc --noEmit")), "{name}: {text}");
        assert!(!events.iter().any(|e| e.step == "bundle" && e.kind == "STEP_SUCCEEDED"), "{name}: {text}");
        assert!(!events.iter().any(|e| e.step == "deploy"), "{name}: {text}");
        assert!(support::containers_of(input.build_id).is_empty(), "{name}: a container was started");
        builds.push(input.build_id);
    }
    // The model was asked to repair, answered with the attack again, and its
    // answer was refused by validation before it reached the build.
    assert!(*hostile.asked.lock().unwrap() >= ATTACKS.len(), "the hostile model was asked");

    // A clean spec through the same worker still goes live.
    let clean = code_spec("return String(args[\"text\"] ?? \"\").toUpperCase();");
    *hostile.spec.lock().unwrap() = clean.clone();
    let input = env.seed(Seed { description: "shout".into(), spec: Some(clean), ..Default::default() }).await;
    let _guard = ContainerGuard(input.build_id);
    env.start(&client, &input).await;
    let url = env.outcome(&client, &input, Duration::from_secs(240)).await.expect("the clean spec builds");
    assert!(url.contains(&input.slug), "{url}");
    assert_eq!(support::containers_of(input.build_id).len(), 1, "the clean build's container runs");
    builds.push(input.build_id);

    // The worker's environment is in no event, blob or log line.
    let secret_key = env.env["BMM_SECRET_KEY"].clone();
    let mut conn = env.pool.get().await.unwrap();
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let blobs: Vec<Vec<u8>> =
        bmm_db::schema::blobs::table.select(bmm_db::schema::blobs::data).load(&mut conn).await.unwrap();
    assert!(!blobs.is_empty());
    for needle in [canary.as_str(), secret_key.as_str()] {
        for blob in &blobs {
            assert!(!blob.windows(needle.len()).any(|w| w == needle.as_bytes()), "a blob carries {needle}");
        }
        for build in &builds {
            for e in env.events(*build).await {
                let data = e.data.as_ref().map(Value::to_string).unwrap_or_default();
                assert!(!e.message.contains(needle) && !data.contains(needle), "event carries {needle}: {e:?}");
            }
        }
        let worker_log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!worker_log.contains(needle), "the worker's log carries {needle}");
    }
    let name = &support::containers_of(input.build_id)[0];
    let logs = std::process::Command::new("docker").args(["logs", name]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
    assert!(!logs.contains(&canary), "the server's log carries the canary");
}
