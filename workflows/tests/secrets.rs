//! Credentials reach the container from the encrypted store, and never a
//! build event; a required credential that was not set fails the deploy
//! with its name (not a value).

mod support;

use std::time::Duration;

use bmm_db::models::Deployment;
use bmm_db::schema::{deployments, secrets};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use support::{ContainerGuard, Env, Seed, describe};
use uuid::Uuid;

fn spec_with_credential() -> serde_json::Value {
    let mut spec = support::code_spec("return `token has ${ctx.credentials[\"API_TOKEN\"].length} characters`;");
    spec["credentials"] = serde_json::json!([{ "key": "API_TOKEN", "label": "API token" }]);
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_the_container_and_never_an_event() {
    let env = Env::new("secrets").await;
    let worker = env.worker();
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "x".into(), spec: Some(spec_with_credential()), ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    let secret = format!("s3cr3t-{}", Uuid::new_v4().simple());
    {
        // Sealed the way the API seals it.
        let sealed =
            env.cfg.secret_box.seal(secret.as_bytes(), format!("secret:{}:API_TOKEN", input.server_id).as_bytes());
        let mut conn = env.pool.get().await.unwrap();
        diesel::insert_into(secrets::table)
            .values((
                secrets::id.eq(Uuid::new_v4()),
                secrets::org_id.eq(input.org_id),
                secrets::server_id.eq(input.server_id),
                secrets::key.eq("API_TOKEN"),
                secrets::nonce.eq(sealed.nonce),
                secrets::ciphertext.eq(sealed.ciphertext),
            ))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    env.start(&client, &input).await;
    env.outcome(&client, &input, Duration::from_secs(300)).await.unwrap_or_else(|e| panic!("{e}"));

    let events = env.events(input.build_id).await;
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&secret), "the secret value is in an event");
    assert!(events.iter().any(|e| e.message.contains("1 credential(s) (API_TOKEN)")), "{}", describe(&events));

    // The handler sees it.
    let dep: Deployment = {
        let mut conn = env.pool.get().await.unwrap();
        deployments::table
            .filter(deployments::build_id.eq(input.build_id))
            .select(Deployment::as_select())
            .first(&mut conn)
            .await
            .unwrap()
    };
    let token = env.token(input.org_id, &input.slug).await;
    let url = format!("http://{}:{}/mcp", dep.host.unwrap(), dep.port.unwrap());
    let result =
        bmm_activities::smoke::call_tool(&url, &token, "shout", serde_json::json!({"text": "x"})).await.unwrap();
    assert!(result.to_string().contains(&format!("token has {} characters", secret.len())), "{result}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_fails_the_deploy_by_name() {
    let env = Env::new("nosecret").await;
    let worker = env.worker();
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "x".into(), spec: Some(spec_with_credential()), ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    env.start(&client, &input).await;
    let err = env.outcome(&client, &input, Duration::from_secs(180)).await.expect_err("must fail");
    assert!(err.contains("deploy failed"), "{err}");
    let events = env.events(input.build_id).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "BUILD_FAILED", "{}", describe(&events));
    assert!(last.message.contains("credential(s) not set: API_TOKEN"), "{}", last.message);
    assert!(support::containers_of(input.build_id).is_empty());
    worker.stop().await;
}
