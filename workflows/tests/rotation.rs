//! Rotating the master key under load: builds and token minting run
//! throughout, every secret still decrypts, a container started after the
//! rotation gets the right credential, the old key is refused once the
//! rotation reports zero values left, and a `kill -9` of the worker
//! mid-rotation resumes to completion. Real PostgreSQL, Temporal, Docker.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bmm_auth::keys::KeyStore;
use bmm_auth::tokens::{AccessGrant, mint_access_token};
use bmm_core::Config;
use bmm_core::crypto::{CryptoError, Sealed, SecretBox};
use bmm_db::models::Deployment;
use bmm_db::schema::{deployments, secrets};
use bmm_workflows::rotation::{rotation_progress, start_rotation};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use support::{ContainerGuard, Env, Seed, describe};
use uuid::Uuid;

/// A master key of this test's own: the rotation's workflow id is named
/// after its target key, and tests share one Temporal namespace.
fn random_key() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn spec_with_credential() -> serde_json::Value {
    let mut spec = support::code_spec("return `token is ${ctx.credentials[\"API_TOKEN\"]}`;");
    spec["credentials"] = serde_json::json!([{ "key": "API_TOKEN", "label": "API token" }]);
    spec
}

/// Seal and store `value` for `key` of the server; `legacy` writes the format from before key ids.
async fn put_secret(env: &Env, sb: &SecretBox, org: Uuid, server: Uuid, key: &str, value: &str, legacy: bool) {
    let ctx = format!("secret:{server}:{key}");
    let sealed = if legacy {
        sb.seal_legacy(value.as_bytes(), ctx.as_bytes())
    } else {
        sb.seal(value.as_bytes(), ctx.as_bytes())
    };
    let mut conn = env.pool.get().await.unwrap();
    diesel::insert_into(secrets::table)
        .values((
            secrets::id.eq(Uuid::now_v7()),
            secrets::org_id.eq(org),
            secrets::server_id.eq(server),
            secrets::key.eq(key),
            secrets::nonce.eq(&sealed.nonce),
            secrets::ciphertext.eq(&sealed.ciphertext),
        ))
        .on_conflict((secrets::server_id, secrets::key))
        .do_update()
        .set((secrets::nonce.eq(&sealed.nonce), secrets::ciphertext.eq(&sealed.ciphertext)))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Every stored secret opened with `sb`: (key, value or error).
async fn open_all(env: &Env, sb: &SecretBox) -> Vec<(String, Result<String, CryptoError>)> {
    let mut conn = env.pool.get().await.unwrap();
    let rows: Vec<(Uuid, String, Vec<u8>, Vec<u8>)> = secrets::table
        .select((secrets::server_id, secrets::key, secrets::nonce, secrets::ciphertext))
        .order(secrets::key.asc())
        .load(&mut conn)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(server, key, nonce, ciphertext)| {
            let r = sb
                .open(&Sealed { nonce, ciphertext }, format!("secret:{server}:{key}").as_bytes())
                .map(|p| String::from_utf8(p).unwrap());
            (key, r)
        })
        .collect()
}

fn config_with_keys(env: &Env, keys: &str) -> Arc<Config> {
    let mut pairs: Vec<(String, String)> = env.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    pairs.retain(|(k, _)| k != "BMM_SECRET_KEY");
    pairs.push(("BMM_SECRET_KEY".into(), keys.into()));
    Arc::new(Config::from_sources(&pairs, None).unwrap())
}

/// Call the deployed server's tool with a fresh token; its answer carries the credential.
async fn tool_answer(env: &Env, build_id: Uuid, slug: &str, org: Uuid) -> String {
    let dep: Deployment = {
        let mut conn = env.pool.get().await.unwrap();
        deployments::table
            .filter(deployments::build_id.eq(build_id))
            .select(Deployment::as_select())
            .first(&mut conn)
            .await
            .unwrap()
    };
    let token = env.token(org, slug).await;
    let url = format!("http://{}:{}/mcp", dep.host.unwrap(), dep.port.unwrap());
    bmm_activities::smoke::call_tool(&url, &token, "shout", serde_json::json!({"text": "x"})).await.unwrap().to_string()
}

/// Apart from diesel's `RunQueryDsl`, whose `get_result` would shadow the workflow handle's.
mod temporal {
    use std::time::Duration;

    use bmm_workflows::rotation::{MasterKeyRotationWorkflow, RotationProgress};
    use temporalio_client::WorkflowGetResultOptions;

    pub async fn wait_rotation(client: &temporalio_client::Client, target: &str, within: Duration) -> RotationProgress {
        let handle = client
            .get_workflow_handle::<MasterKeyRotationWorkflow>(bmm_workflows::rotation::rotation_workflow_id(target));
        tokio::time::timeout(within, handle.get_result(WorkflowGetResultOptions::default()))
            .await
            .unwrap_or_else(|_| panic!("rotation did not finish within {within:?}"))
            .unwrap_or_else(|e| panic!("rotation failed: {e:?}"))
    }
}

use temporal::wait_rotation;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_keeps_every_secret_readable_and_then_refuses_the_old_key() {
    let (old_key, new_key) = (random_key(), random_key());
    let mut env = Env::new("rotate").await;
    env.set("BMM_SECRET_KEY", &old_key);
    let old_cfg = env.cfg.clone();
    let old = old_cfg.secret_box.clone();
    let input =
        env.seed(Seed { description: "x".into(), spec: Some(spec_with_credential()), ..Default::default() }).await;
    let _g1 = ContainerGuard(input.build_id);
    // The credential the containers get, in the format from before key ids,
    // and a hundred more values, half of each format.
    put_secret(&env, &old, input.org_id, input.server_id, "API_TOKEN", "first-token", true).await;
    for i in 0..100 {
        put_secret(&env, &old, input.org_id, input.server_id, &format!("FILLER_{i:03}"), &format!("v{i}"), i % 2 == 0)
            .await;
    }
    // A signing key sealed under the old key.
    KeyStore::without_jwks_file(env.pool.clone(), old_cfg.clone()).init().await.unwrap();
    let before: Vec<_> = open_all(&env, &old).await.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    assert_eq!(before.len(), 101);

    // Every process now has the new key first and the old one after it.
    env.set("BMM_SECRET_KEY", &format!("{new_key},{old_key}"));
    let cfg = env.cfg.clone();
    let new_id = cfg.secret_box.key_id.clone();
    let worker = env.worker();
    let client = env.client().await;

    // Load: token minting and secret reads as an API process would do them, without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(std::sync::Mutex::new(Vec::<String>::new())));
    let load = {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let pool = env.pool.clone();
        let cfg = cfg.clone();
        let slug = input.slug.clone();
        tokio::spawn(async move {
            while !AtomicBool::load(&stop, Ordering::Relaxed) {
                // A fresh key store each time: it reads and opens the sealed signing key.
                let keys = KeyStore::without_jwks_file(pool.clone(), cfg.clone());
                let audience = cfg.server_url(&slug);
                let grant = AccessGrant {
                    user_id: Uuid::new_v4(),
                    org_id: Uuid::new_v4(),
                    audience: &audience,
                    scope: "mcp",
                    client_id: "load",
                    ttl: Duration::from_secs(60),
                };
                match mint_access_token(&keys, &grant).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("token: {e:?}"));
                        0
                    }
                };
                let mut conn = pool.get().await.unwrap();
                let rows: Vec<(Uuid, String, Vec<u8>, Vec<u8>)> = secrets::table
                    .select((secrets::server_id, secrets::key, secrets::nonce, secrets::ciphertext))
                    .load(&mut conn)
                    .await
                    .unwrap();
                for (server, key, nonce, ciphertext) in rows {
                    match cfg
                        .secret_box
                        .open(&Sealed { nonce, ciphertext }, format!("secret:{server}:{key}").as_bytes())
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("secret {key}: {e}"));
                            0
                        }
                    };
                }
            }
        })
    };

    // A build runs through the rotation (its deploy opens the credential).
    env.start(&client, &input).await;
    let id = start_rotation(&client, &cfg, 4).await.unwrap();
    assert_eq!(id, format!("master-key-rotation-{new_id}"));
    // Starting it again attaches to the same rotation.
    assert_eq!(start_rotation(&client, &cfg, 4).await.unwrap(), id);
    let progress = wait_rotation(&client, &new_id, Duration::from_secs(300)).await;
    assert_eq!(progress.phase, "done");
    assert_eq!(progress.rewrapped, 102, "101 secrets and the signing key: {progress:?}");
    assert!(progress.batches >= 26, "batches of 4: {progress:?}");
    assert_eq!(progress.retired, vec![old.key_id.clone()]);
    let status = rotation_progress(&client, &new_id).await.unwrap().unwrap();
    assert_eq!(status.status, "Completed");
    assert_eq!(status.progress.unwrap().remaining, Some(0));

    env.outcome(&client, &input, Duration::from_secs(300)).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(tool_answer(&env, input.build_id, &input.slug, input.org_id).await.contains("token is first-token"));
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "requests failed during the rotation: {failures:?}");
    assert!(AtomicU64::load(&ok, Ordering::Relaxed) > 101, "the load ran");

    // Every secret decrypts to what it was, with the new key alone.
    let new_only = SecretBox::from_hex(&new_key).unwrap();
    let after: Vec<_> = open_all(&env, &new_only).await.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    assert_eq!(after, before);
    {
        let mut conn = env.pool.get().await.unwrap();
        assert_eq!(bmm_db::master_keys::remaining(&mut conn, &new_id).await.unwrap(), 0);
    }

    // The old key is refused: values it sealed do not open even where it is still configured,
    // and a process with it first does not start.
    let stale = old.seal(b"x", b"c");
    assert_eq!(cfg.secret_box.open(&stale, b"c"), Err(CryptoError::RetiredKey(old.key_id.clone())));
    let elsewhere = config_with_keys(&env, &format!("{new_key},{old_key}"));
    bmm_db::master_keys::apply_retired(&env.pool, &elsewhere.secret_box).await.unwrap();
    assert_eq!(elsewhere.secret_box.open(&stale, b"c"), Err(CryptoError::RetiredKey(old.key_id.clone())));
    assert!(matches!(open_all(&env, &old).await[0].1, Err(CryptoError::UnknownKey(..))));
    let mut old_worker = env.worker_process_with(&[("BMM_SECRET_KEY", &old_key)]);
    let status = old_worker.child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "a worker whose key was retired must not start");

    // A container started after the rotation gets the credential set during it.
    put_secret(&env, &cfg.secret_box, input.org_id, input.server_id, "API_TOKEN", "second-token", false).await;
    let v2 = env
        .seed(Seed {
            description: "x".into(),
            spec: Some(spec_with_credential()),
            server_id: Some(input.server_id),
            org_id: Some(input.org_id),
            slug: Some(input.slug.clone()),
            ..Default::default()
        })
        .await;
    let _g2 = ContainerGuard(v2.build_id);
    env.start(&client, &v2).await;
    env.outcome(&client, &v2, Duration::from_secs(300)).await.unwrap_or_else(|e| {
        panic!("build after the rotation failed: {e}");
    });
    let answer = tool_answer(&env, v2.build_id, &v2.slug, v2.org_id).await;
    assert!(answer.contains("token is second-token"), "{answer}; {}", describe(&env.events(v2.build_id).await));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_survives_kill_9_of_its_worker() {
    let (old_key, new_key) = (random_key(), random_key());
    let mut env = Env::new("rotate-kill9").await;
    env.set("BMM_SECRET_KEY", &old_key);
    let old = env.cfg.secret_box.clone();
    let input = env.seed(Seed { description: "x".into(), ..Default::default() }).await;
    for i in 0..60 {
        put_secret(&env, &old, input.org_id, input.server_id, &format!("K_{i:02}"), &format!("v{i}"), i % 3 == 0).await;
    }
    let before: Vec<_> = open_all(&env, &old).await.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    env.set("BMM_SECRET_KEY", &format!("{new_key},{old_key}"));
    // Each batch takes a while, so the kill lands inside one.
    env.set("BMM_TEST_REWRAP_PAUSE_MS", "400");
    let new_id = env.cfg.secret_box.key_id.clone();
    let client = env.client().await;

    let mut w1 = env.worker_process();
    start_rotation(&client, &env.cfg, 3).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let left_at_kill = loop {
        let left = {
            let mut conn = env.pool.get().await.unwrap();
            bmm_db::master_keys::remaining(&mut conn, &new_id).await.unwrap()
        };
        if left <= 45 {
            break left;
        }
        assert!(Instant::now() < deadline, "the rotation made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Into the next batch's pause: the kill lands inside an activity.
    tokio::time::sleep(Duration::from_millis(200)).await;
    w1.kill9();
    assert!(left_at_kill > 3, "killed before the end");
    let status = rotation_progress(&client, &new_id).await.unwrap().unwrap();
    assert_eq!(status.status, "Running");

    let _w2 = env.worker_process();
    let progress = wait_rotation(&client, &new_id, Duration::from_secs(300)).await;
    assert_eq!(progress.phase, "done");
    assert_eq!(progress.retired, vec![old.key_id.clone()]);
    let new_only = SecretBox::from_hex(&new_key).unwrap();
    let after: Vec<_> = open_all(&env, &new_only).await.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
    assert_eq!(after, before, "every value survived the kill and the retried batch");
    // What w1 was doing when it died was done again on w2: the batch (a second
    // attempt) or, when the kill fell between batches, the workflow task.
    let history =
        support::history_json(&support::temporal_address(), &bmm_workflows::rotation::rotation_workflow_id(&new_id));
    let events = history["events"].as_array().cloned().unwrap_or_default();
    let timed_out = events.iter().filter(|e| e.get("workflowTaskTimedOutEventAttributes").is_some()).count();
    let retried = events
        .iter()
        .filter_map(|e| e.get("activityTaskStartedEventAttributes"))
        .any(|a| a["attempt"].as_i64().or_else(|| a["attempt"].as_str().and_then(|s| s.parse().ok())) > Some(1));
    assert!(timed_out > 0 || retried, "nothing was retried after the kill: {history}");
}
