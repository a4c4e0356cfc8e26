//! Builds that must fail at the check step, against the real Temporal dev
//! server, PostgreSQL and node toolchain: banned code and type errors end
//! the build FAILED with the place (`file:line`) and the cause in events.

mod support;

use std::time::Duration;

use support::{Env, Seed, code_spec, describe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_code_fails_the_check_with_file_and_line() {
    let env = Env::new("banned").await;
    let worker = env.worker();
    let client = env.client().await;
    let spec = code_spec("const f = eval;\nreturn eval(\"String(args.text).toUpperCase()\");");
    let input = env.seed(Seed { description: "shout".into(), spec: Some(spec), ..Default::default() }).await;
    env.start(&client, &input).await;

    let err = env.outcome(&client, &input, Duration::from_secs(120)).await.expect_err("the build must fail");
    assert!(err.contains("check failed"), "workflow failure names the step: {err}");

    let events = env.events(input.build_id).await;
    let text = describe(&events);
    let finding = events
        .iter()
        .find(|e| e.step == "check" && e.kind == "LOG" && e.message.contains("banned pattern `eval("))
        .unwrap_or_else(|| panic!("no finding event: {text}"));
    // file:line of the rendered tool file, and where that is in the handler.
    assert!(finding.message.starts_with("src/tools/shout.ts:"), "{}", finding.message);
    assert!(finding.message.contains("(tool shout, handler line 2)"), "{}", finding.message);
    assert!(events.iter().any(|e| e.kind == "STEP_FAILED" && e.step == "check"), "{text}");
    assert!(!events.iter().any(|e| e.kind == "STEP_RETRYING"), "banned code is not retried: {text}");
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{text}");
    assert!(last.message.starts_with("build failed at check: "), "{}", last.message);
    assert!(last.message.contains("banned code"), "{}", last.message);

    let build = env.build(input.build_id).await;
    assert_eq!(build.status, "FAILED");
    assert!(build.error.as_deref().unwrap_or_default().starts_with("check: "), "{:?}", build.error);
    assert!(build.started_at.is_some() && build.finished_at.is_some());
    // Nothing reached Docker: bundle, which runs beside the check, refuses banned code too.
    assert!(!events.iter().any(|e| e.step == "bundle" && e.kind == "STEP_SUCCEEDED"), "{text}");
    assert!(!events.iter().any(|e| e.step == "deploy"), "{text}");
    assert!(support::containers_of(input.build_id).is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_errors_fail_the_check_with_the_compiler_message() {
    let env = Env::new("tsc").await;
    // The deploy that runs beside the type check is held (heartbeating), so
    // the failed check must cancel it rather than wait for it.
    let mut activities = bmm_activities::BuildActivities::new(env.cfg.clone(), env.pool.clone());
    activities.pauses = vec![(bmm_activities::Step::Deploy, Duration::from_secs(600))];
    let worker = env.worker_from(activities);
    let client = env.client().await;
    let spec = code_spec("const n: number = \"not a number\";\nreturn String(n);");
    let input = env.seed(Seed { description: "shout".into(), spec: Some(spec), ..Default::default() }).await;
    env.start(&client, &input).await;

    let err = env.outcome(&client, &input, Duration::from_secs(180)).await.expect_err("the build must fail");
    assert!(err.contains("check failed"), "{err}");
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    let diag = events
        .iter()
        .find(|e| e.step == "check" && e.kind == "LOG" && e.message.contains("TS2322"))
        .unwrap_or_else(|| panic!("no compiler diagnostic event: {text}"));
    assert!(diag.message.starts_with("src/tools/shout.ts:"), "{}", diag.message);
    assert!(diag.message.contains("not assignable to type 'number'"), "{}", diag.message);
    assert!(diag.message.contains("handler line 1"), "{}", diag.message);
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{text}");
    assert!(last.message.contains("type errors") && last.message.contains("TS2322"), "{}", last.message);
    assert_eq!(env.build(input.build_id).await.status, "FAILED");
    // The bundle went ahead beside the check; its deploy was cancelled, and
    // nothing of it is left running.
    assert!(events.iter().any(|e| e.step == "bundle" && e.kind == "STEP_SUCCEEDED"), "{text}");
    assert!(!events.iter().any(|e| e.step == "deploy" && e.kind == "STEP_SUCCEEDED"), "{text}");
    assert!(support::containers_of(input.build_id).is_empty());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_fails_generate_without_retrying() {
    let env = Env::new("invalid").await;
    let worker = env.worker();
    let client = env.client().await;
    let mut spec = code_spec("return \"x\";");
    spec["tools"][0]["name"] = serde_json::json!("9 not a name");
    let input = env.seed(Seed { description: "x".into(), spec: Some(spec), ..Default::default() }).await;
    env.start(&client, &input).await;
    let err = env.outcome(&client, &input, Duration::from_secs(60)).await.expect_err("must fail");
    assert!(err.contains("generate failed"), "{err}");
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{text}");
    assert!(last.message.contains("tools[0].name"), "names the field: {}", last.message);
    assert_eq!(events.iter().filter(|e| e.kind == "STEP_STARTED").count(), 1, "not retried: {text}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_without_spec_or_preview_fails_clearly() {
    let env = Env::new("nospec").await;
    let worker = env.worker();
    let client = env.client().await;
    let mut input = env.seed(Seed { description: "echo".into(), preview_expired: true, ..Default::default() }).await;
    input.preview_id = None;
    env.start(&client, &input).await;
    env.outcome(&client, &input, Duration::from_secs(60)).await.expect_err("must fail");
    let events = env.events(input.build_id).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED");
    assert!(last.message.contains("no spec and no preview"), "{}", last.message);
    worker.stop().await;
}
