//! With a model generator, what the check step finds (compiler errors,
//! banned code) goes back to the generator as a repair request, at most
//! twice. A scripted generator stands in for the model.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bmm_generator::{GenerateError, GenerateRequest, Generated, Generator};
use support::{Env, Seed, code_spec, describe};

/// Answers repair requests with the next spec of its script and records what it was asked.
struct Scripted {
    script: Mutex<Vec<serde_json::Value>>,
    asked: Mutex<Vec<GenerateRequest>>,
}

#[async_trait::async_trait]
impl Generator for Scripted {
    async fn generate(&self, req: &GenerateRequest) -> Result<Generated, GenerateError> {
        self.asked.lock().unwrap().push(req.clone());
        let next = self.script.lock().unwrap().remove(0);
        Ok(Generated {
            spec: serde_json::from_value(next).unwrap(),
            generator: "anthropic:scripted".into(),
            usage: None,
            warnings: vec![],
        })
    }

    fn name(&self) -> String {
        "anthropic:scripted".into()
    }
}

const BROKEN: &str = "const n: number = \"text\";\nreturn String(n);";
const STILL_BROKEN: &str = "return eval(String(args.text));";
const FIXED: &str = "return String(args[\"text\"] ?? \"\").toUpperCase();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_problems_go_back_to_the_generator_until_fixed() {
    let env = Env::new("repair").await;
    let generator = Arc::new(Scripted {
        script: Mutex::new(vec![code_spec(STILL_BROKEN), code_spec(FIXED)]),
        asked: Mutex::new(vec![]),
    });
    let worker = env.worker_with(Some(generator.clone()));
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "shout".into(), spec: Some(code_spec(BROKEN)), ..Default::default() }).await;
    env.start(&client, &input).await;
    // Once the repaired source is bundled the point is made; stop before Docker.
    env.wait_event(input.build_id, Duration::from_secs(180), |e| e.step == "bundle" && e.kind == "STEP_SUCCEEDED")
        .await;
    bmm_workflows::client::cancel_build(&client, &env.cfg, input.build_id).await.unwrap();
    env.outcome(&client, &input, Duration::from_secs(120)).await.expect_err("cancelled");

    let asked = generator.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "two repair rounds");
    let first = asked[0].repair.clone().expect("a repair request");
    assert!(first.iter().any(|p| p.contains("TS2322") && p.starts_with("src/tools/shout.ts:")), "{first:?}");
    assert_eq!(
        asked[0].base.as_ref().unwrap().tools[0].handler,
        serde_json::from_value(code_spec(BROKEN)["tools"][0]["handler"].clone()).unwrap()
    );
    let second = asked[1].repair.clone().expect("a repair request");
    assert!(second.iter().any(|p| p.contains("banned pattern `eval(`")), "{second:?}");

    let events = env.events(input.build_id).await;
    let text = describe(&events);
    assert!(
        events.iter().any(|e| e.message == "asking anthropic:scripted to repair 1 problem(s) (attempt 1 of 2)"),
        "{text}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("asking anthropic:scripted to repair")
                && e.message.ends_with("(attempt 2 of 2)")),
        "{text}"
    );
    assert!(events.iter().any(|e| e.step == "check" && e.kind == "STEP_SUCCEEDED"), "{text}");
    assert_eq!(events.last().unwrap().kind, "BUILD_CANCELLED", "{text}");
    // The version keeps the repaired spec, made by the model.
    let mut conn = env.pool.get().await.unwrap();
    let v = {
        use bmm_db::schema::server_versions;
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        server_versions::table
            .filter(server_versions::id.eq(input.version_id))
            .select(bmm_db::models::ServerVersion::as_select())
            .first(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(v.spec.unwrap()["tools"][0]["handler"]["typescript"], serde_json::json!(FIXED));
    assert_eq!(v.generator, "anthropic:scripted");
    assert!(v.source_digest.is_some() && v.bundle_digest.is_some());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_are_bounded() {
    let env = Env::new("repair-bound").await;
    let generator = Arc::new(Scripted {
        script: Mutex::new(vec![code_spec(BROKEN), code_spec(BROKEN), code_spec(FIXED)]),
        asked: Mutex::new(vec![]),
    });
    let worker = env.worker_with(Some(generator.clone()));
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "shout".into(), spec: Some(code_spec(BROKEN)), ..Default::default() }).await;
    env.start(&client, &input).await;
    let err = env.outcome(&client, &input, Duration::from_secs(180)).await.expect_err("fails after two repairs");
    assert!(err.contains("check failed"), "{err}");
    assert_eq!(generator.asked.lock().unwrap().len(), 2, "no third repair");
    let events = env.events(input.build_id).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{}", describe(&events));
    assert!(last.message.contains("type errors") && last.message.contains("TS2322"), "{}", last.message);
    worker.stop().await;
}
