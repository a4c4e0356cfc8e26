//! Builds ride through faults of the runtime: a container removed or stopped
//! between deploy and the cut-over (as a Docker restart or an operator leaves
//! it) is deployed again by the same idempotent deploy, and the build
//! succeeds with exactly one container that answers. The server's own faults
//! (wrong tools) still fail the build: see `build.rs`.

mod support;

use std::process::Command;
use std::time::Duration;

use bmm_activities::Step;
use bmm_db::models::Deployment;
use bmm_db::schema::deployments;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use support::{ContainerGuard, Env, Seed, containers_of, describe};

/// What the test does to the container while `step` is held.
#[derive(Clone, Copy)]
enum Fault {
    /// `docker rm -f`: the container is gone.
    Remove,
    /// `docker stop`: it exists, stopped (as a Docker restart leaves it).
    Stop,
}

async fn ride_through(name: &str, step: Step, fault: Fault) {
    let env = Env::new(name).await;
    let mut acts = bmm_activities::BuildActivities::new(env.cfg.clone(), env.pool.clone());
    // Hold the step's first attempt, so the fault lands after deploy and before the step acts.
    acts.pauses = vec![(step, Duration::from_secs(6))];
    let worker = env.worker_from(acts);
    let client = env.client().await;
    let input = env.seed(Seed { description: "An echo tool.".into(), ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    env.start(&client, &input).await;

    env.wait_event(input.build_id, Duration::from_secs(240), |e| e.step == step.as_str() && e.kind == "STEP_STARTED")
        .await;
    let containers = containers_of(input.build_id);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let args: &[&str] = match fault {
        Fault::Remove => &["rm", "-f"],
        Fault::Stop => &["stop", "-t", "5"],
    };
    let out = Command::new("docker").args(args).arg(&containers[0]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let url = env.outcome(&client, &input, Duration::from_secs(300)).await.unwrap_or_else(|e| {
        panic!("the build failed: {e}");
    });
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    // The step noticed, the deploy ran again, and the build went live.
    assert!(
        events.iter().any(|e| e.step == step.as_str()
            && e.kind == "STEP_RETRYING"
            && e.message.contains(&containers[0])
            && e.message.ends_with("; deploying it again")),
        "{text}"
    );
    let deploys = events.iter().filter(|e| e.step == "deploy" && e.kind == "STEP_SUCCEEDED").count();
    assert_eq!(deploys, 2, "{text}");
    assert_eq!(events.last().unwrap().kind, "BUILD_SUCCEEDED", "{text}");
    assert!(!events.iter().any(|e| e.kind == "STEP_FAILED"), "{text}");

    // Exactly one container, the one routed, and it answers.
    assert_eq!(containers_of(input.build_id), containers, "one container, of the same name");
    let deps: Vec<Deployment> = {
        let mut conn = env.pool.get().await.unwrap();
        deployments::table
            .filter(deployments::build_id.eq(input.build_id))
            .select(Deployment::as_select())
            .load(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].status, "LIVE");
    let token = env.token(input.org_id, &input.slug).await;
    let direct = format!("http://{}:{}/mcp", deps[0].host.as_deref().unwrap(), deps[0].port.unwrap());
    let result = bmm_activities::smoke::call_tool(&direct, &token, "echo", serde_json::json!({"text": "back again"}))
        .await
        .expect("the routed container answers tools/call");
    assert!(result.to_string().contains("back again"), "{result}");
    assert!(url.ends_with(&format!("/s/{}/mcp", input.slug)), "{url}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_removed_before_smoke_is_deployed_again_and_the_build_succeeds() {
    ride_through("gone-smoke", Step::Smoke, Fault::Remove).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_stopped_before_the_cut_over_is_started_again_and_the_build_succeeds() {
    ride_through("gone-cutover", Step::Cutover, Fault::Stop).await;
}
