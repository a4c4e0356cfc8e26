//! The same source gives the same bundle: a later build of an identical spec
//! reuses the stored bundle instead of running esbuild again.

mod support;

use std::time::Duration;

use support::{Env, Seed, code_spec, describe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_source_reuses_the_bundle() {
    let env = Env::new("cache").await;
    let worker = env.worker();
    let client = env.client().await;
    let spec = code_spec("return String(args[\"text\"] ?? \"\").toUpperCase();");
    let mut digests = Vec::new();
    let mut server = None;
    for round in 0..2 {
        let seed = match server {
            None => Seed { description: "shout".into(), spec: Some(spec.clone()), ..Default::default() },
            Some((server_id, org_id, ref slug)) => Seed {
                description: "shout".into(),
                spec: Some(spec.clone()),
                server_id: Some(server_id),
                org_id: Some(org_id),
                slug: Some(String::clone(slug)),
                ..Default::default()
            },
        };
        let input = env.seed(seed).await;
        server = Some((input.server_id, input.org_id, input.slug.clone()));
        env.start(&client, &input).await;
        let done = env
            .wait_event(input.build_id, Duration::from_secs(180), |e| e.step == "bundle" && e.kind == "STEP_SUCCEEDED")
            .await;
        // The cache is keyed on checked sources, and the check runs beside
        // bundle → deploy: let it record the source, then stop the build
        // (the bundle is what this test is about).
        env.wait_event(input.build_id, Duration::from_secs(180), |e| e.step == "check" && e.kind == "STEP_SUCCEEDED")
            .await;
        bmm_workflows::client::cancel_build(&client, &env.cfg, input.build_id).await.unwrap();
        env.outcome(&client, &input, Duration::from_secs(120)).await.expect_err("cancelled");
        let data = done.data.clone().unwrap_or_default();
        assert_eq!(
            data["cached"],
            serde_json::json!(round == 1),
            "round {round}: {}",
            describe(&env.events(input.build_id).await)
        );
        digests.push(data["bundleDigest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests[0], digests[1], "same source, same bundle digest");
    worker.stop().await;
}
