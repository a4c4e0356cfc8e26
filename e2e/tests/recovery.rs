//! Servers come back by themselves: three live servers on a private Docker
//! daemon (never the shared one), which is `kill -9`ed and started again, and
//! whose containers are then removed by hand; within 30 s every server answers
//! `tools/call` through the gateway again, and its events say it went
//! DEGRADED/DOWN → LIVE. Orphans with this platform's labels are removed; a
//! container of another program (or of another platform) is never touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bmm_e2e::{Gql, Platform, PlatformOptions, PrivateDockerd};
use serde_json::{Value, json};

const BACK_WITHIN: Duration = Duration::from_secs(30);

struct Live {
    id: String,
    url: String,
    token: String,
}

async fn token(platform: &Platform, gql: &Gql, audience: &str) -> String {
    let me = gql.data("{ me { id orgId } }", json!({})).await;
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("BMM_DATABASE_URL".into(), platform.db.url.clone()));
    env.push(("BMM_PUBLIC_URL".into(), platform.url().to_owned()));
    let cfg = bmm_core::Config::from_sources(&env, None).expect("config");
    let keys = bmm_auth::keys::KeyStore::without_jwks_file(platform.db.pool(), Arc::new(cfg));
    let grant = bmm_auth::tokens::AccessGrant {
        user_id: me["me"]["id"].as_str().unwrap().parse().unwrap(),
        org_id: me["me"]["orgId"].as_str().unwrap().parse().unwrap(),
        audience,
        scope: "mcp",
        client_id: "bmm-recovery-test",
        ttl: Duration::from_secs(900),
    };
    bmm_auth::tokens::mint_access_token(&keys, &grant).await.expect("token").0
}

async fn answers(s: &Live) -> Result<Value, String> {
    bmm_activities::smoke::call_tool(&s.url, &s.token, "echo", json!({ "text": "still here?" }))
        .await
        .map_err(|e| e.to_string())
}

/// Until every server answers `tools/call` through the gateway; how long that took.
async fn all_answer(servers: &[Live], within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        let results = futures::future::join_all(servers.iter().map(answers)).await;
        match results.iter().find_map(|r| r.as_ref().err()) {
            None => return Ok(started.elapsed()),
            Some(e) => last = e.clone(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The server's status changes (`from → to`), oldest first.
async fn transitions(gql: &Gql, id: &str) -> Vec<(String, String)> {
    let v =
        gql.data("query($id: ID!) { server(id: $id) { events(limit: 200) { kind data } } }", json!({ "id": id })).await;
    let mut out: Vec<(String, String)> = v["server"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "STATUS_CHANGED")
        .map(|e| (e["data"]["from"].as_str().unwrap().to_owned(), e["data"]["to"].as_str().unwrap().to_owned()))
        .collect();
    out.reverse();
    out
}

async fn event_kinds(gql: &Gql, id: &str) -> Vec<String> {
    let v = gql.data("query($id: ID!) { server(id: $id) { events(limit: 200) { kind } } }", json!({ "id": id })).await;
    v["server"]["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

async fn status(gql: &Gql, id: &str) -> String {
    let v = gql.data("query($id: ID!) { server(id: $id) { status } }", json!({ "id": id })).await;
    v["server"]["status"].as_str().unwrap().to_owned()
}

/// Went away from LIVE (DEGRADED or DOWN) and back, after `seen` earlier changes.
fn went_down_and_back(t: &[(String, String)], seen: usize) -> bool {
    let new = &t[seen.min(t.len())..];
    new.iter().any(|(_, to)| to == "DEGRADED" || to == "DOWN") && new.last().is_some_and(|(_, to)| to == "LIVE")
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_servers_recover_from_a_killed_dockerd_and_removed_containers_and_orphans_go() {
    let mut dockerd = PrivateDockerd::start().await.expect("a private dockerd (needs root and dockerd)");
    let image = std::env::var("BMM_RUNTIME_IMAGE").unwrap_or_else(|_| "bmm-runtime:node20".to_owned());
    dockerd.load_image(&image).await.expect("the runtime image loads into the private daemon");
    let platform_id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let platform = Platform::start(PlatformOptions {
        env: vec![
            ("BMM_DOCKER_HOST".into(), dockerd.host.clone()),
            ("BMM_RECONCILE_INTERVAL_MS".into(), "500".into()),
            ("BMM_ORPHAN_GRACE_SECS".into(), "0".into()),
            ("BMM_PLATFORM_ID".into(), platform_id.clone()),
        ],
        ..Default::default()
    })
    .await;
    let key = platform.api_key("recovery@example.test").await;
    let gql = Gql::new(platform.url(), &key);

    // Three live servers, built concurrently through the real workflow.
    let mut created = Vec::new();
    for i in 0..3 {
        created.push(gql.create_server("An echo tool.", &format!("recovers {i}")).await);
    }
    let mut servers = Vec::new();
    for (server, build) in &created {
        let status = gql.wait_build(build, Duration::from_secs(300)).await;
        assert_eq!(status, "SUCCEEDED", "{:?}\n{}", gql.events(build).await, platform.logs());
        let url = server["url"].as_str().unwrap().to_owned();
        let token = token(&platform, &gql, &url).await;
        servers.push(Live { id: server["id"].as_str().unwrap().to_owned(), url, token });
    }
    all_answer(&servers, Duration::from_secs(10)).await.expect("every server answers before the fault");

    // kill -9 of dockerd; the platform keeps telling the truth while it is gone.
    dockerd.kill9().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(dockerd.restart().await, "the private dockerd starts again:\n{}", dockerd.log_tail(30));
    let took = all_answer(&servers, BACK_WITHIN).await.unwrap_or_else(|e| {
        panic!(
            "not every server answers {BACK_WITHIN:?} after dockerd came back: {e}\n{}\n{}",
            platform.logs(),
            dockerd.log_tail(30)
        )
    });
    eprintln!("every server answered {took:?} after dockerd came back");
    let mut seen = Vec::new();
    for s in &servers {
        // The pass that records LIVE may trail the first answer by one interval.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut t = transitions(&gql, &s.id).await;
        while !went_down_and_back(&t, 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            t = transitions(&gql, &s.id).await;
        }
        assert!(went_down_and_back(&t, 0), "{}: {t:?} {:?}\n{}", s.id, event_kinds(&gql, &s.id).await, platform.logs());
        assert_eq!(status(&gql, &s.id).await, "LIVE");
        seen.push(t.len());
    }

    // The containers removed by hand: the reconciler redeploys them from their bundles.
    let ids = dockerd.docker(&["ps", "-aq", "--filter", &format!("label=bmm.platform={platform_id}")]).await.unwrap();
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 3, "one container per live server: {ids:?}");
    dockerd.docker(&[&["rm", "-f"][..], &ids[..]].concat()).await.unwrap();
    let took = all_answer(&servers, BACK_WITHIN).await.unwrap_or_else(|e| {
        panic!("not every server answers {BACK_WITHIN:?} after docker rm -f: {e}\n{}", platform.logs())
    });
    eprintln!("every server answered {took:?} after its container was removed");
    for (s, seen) in servers.iter().zip(&seen) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut t = transitions(&gql, &s.id).await;
        while !went_down_and_back(&t, *seen) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            t = transitions(&gql, &s.id).await;
        }
        assert!(went_down_and_back(&t, *seen), "{}: {t:?}", s.id);
        assert!(event_kinds(&gql, &s.id).await.iter().any(|k| k == "REDEPLOYED"), "{}", s.id);
    }
    let after = dockerd.docker(&["ps", "-q", "--filter", &format!("label=bmm.platform={platform_id}")]).await.unwrap();
    assert_eq!(after.lines().count(), 3, "exactly one container per server again: {after}");

    // Orphans: a container and an image with this platform's labels that no
    // deployment owns go; another program's container and another platform's stay.
    let labels = |platform: &str| {
        vec![
            "--label".to_owned(),
            "bmm.managed=true".to_owned(),
            "--label".to_owned(),
            format!("bmm.platform={platform}"),
        ]
    };
    let create = |name: &str, labels: Vec<String>| {
        let mut args = vec!["create".to_owned(), "--name".to_owned(), name.to_owned()];
        args.extend(labels);
        args.extend([image.clone(), "-e".to_owned(), "setInterval(()=>{},1000)".to_owned()]);
        args
    };
    let run = |args: Vec<String>| {
        let d = &dockerd;
        async move { d.docker(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    run(create("orphan-of-a-crashed-build", labels(&platform_id))).await.unwrap();
    run(create("another-program", vec!["--label".to_owned(), "app=not-bmm".to_owned()])).await.unwrap();
    run(create("another-platform", labels("some-other-platform"))).await.unwrap();
    run(vec![
        "commit".into(),
        "--change".into(),
        "LABEL bmm.managed=true".into(),
        "--change".into(),
        format!("LABEL bmm.platform={platform_id}"),
        "another-program".into(),
        "bmm-orphan:test".into(),
    ])
    .await
    .unwrap();
    let exists = |what: &'static str, name: &'static str| {
        let d = &dockerd;
        async move { d.docker(&[what, "inspect", name]).await.is_ok() }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while (exists("container", "orphan-of-a-crashed-build").await || exists("image", "bmm-orphan:test").await)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!exists("container", "orphan-of-a-crashed-build").await, "the orphan container is removed");
    assert!(!exists("image", "bmm-orphan:test").await, "the orphan image is removed");
    assert!(exists("container", "another-program").await, "another program's container is never touched");
    assert!(exists("container", "another-platform").await, "another platform's container is never touched");
    all_answer(&servers, Duration::from_secs(5)).await.expect("the live servers are not orphans");
    drop(platform);
    drop(dockerd);
}
