//! buildEvents over graphql-transport-ws, through the real server.

mod common;

use bmm_db::events::EventKind;
use common::*;
use serde_json::json;

#[tokio::test]
async fn subscription_receives_every_event_in_order_then_completes() {
    let app = TestApp::start().await;
    let (key, _, org) = app.user("sub@example.com").await;
    let (_, build) = app.seed_build(org, "sub-order").await;
    // A backlog before subscribing…
    for i in 0..10 {
        app.append(build, EventKind::Log, &format!("before {i}")).await;
    }
    let mut ws = app.ws(json!({ "Authorization": format!("Bearer {key}") })).await;
    ws.expect_ack().await;
    ws.subscribe("1", BUILD_EVENTS, json!({ "id": build })).await;
    // …and live events appended while subscribed, from a concurrent writer.
    let writer = {
        let pool = app.state.pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get().await.unwrap();
            for i in 0..40 {
                let msg = format!("live {i}");
                bmm_db::events::append(
                    &mut conn,
                    bmm_db::events::NewEvent {
                        build_id: build,
                        step: "bundle",
                        kind: EventKind::Log,
                        message: &msg,
                        data: None,
                    },
                )
                .await
                .unwrap();
            }
            bmm_db::events::append(
                &mut conn,
                bmm_db::events::NewEvent {
                    build_id: build,
                    step: "cutover",
                    kind: EventKind::BuildSucceeded,
                    message: "live",
                    data: None,
                },
            )
            .await
            .unwrap();
        })
    };
    let (events, completed) = ws.collect("1", 1000).await;
    writer.await.unwrap();
    assert!(completed, "the subscription completes after the terminal event");
    assert_eq!(seqs(&events), (1..=51).collect::<Vec<_>>());
    assert_eq!(events[50]["data"]["buildEvents"]["kind"], "BUILD_SUCCEEDED");
    assert_eq!(events[0]["data"]["buildEvents"]["message"], "before 0");
}

#[tokio::test]
async fn reconnect_with_after_resumes_without_gap_or_duplicate() {
    let app = TestApp::start().await;
    let (key, _, org) = app.user("resume@example.com").await;
    let (_, build) = app.seed_build(org, "resume").await;
    for i in 0..20 {
        app.append(build, EventKind::Log, &format!("line {i}")).await;
    }
    let init = json!({ "authorization": format!("Bearer {key}") });
    let mut ws = app.ws(init.clone()).await;
    ws.expect_ack().await;
    ws.subscribe("a", BUILD_EVENTS, json!({ "id": build })).await;
    let (first, _) = ws.collect("a", 12).await;
    assert_eq!(seqs(&first), (1..=12).collect::<Vec<_>>());
    drop(ws); // the connection drops mid-stream

    for i in 20..30 {
        app.append(build, EventKind::Log, &format!("line {i}")).await;
    }
    let mut ws = app.ws(init).await;
    ws.expect_ack().await;
    ws.subscribe("b", BUILD_EVENTS, json!({ "id": build, "after": 12 })).await;
    let (more, _) = ws.collect("b", 18).await;
    assert_eq!(seqs(&more), (13..=30).collect::<Vec<_>>());
    app.append(build, EventKind::BuildFailed, "smoke test failed").await;
    let (last, completed) = ws.collect("b", 10).await;
    assert_eq!(seqs(&last), vec![31]);
    assert!(completed);
}

#[tokio::test]
async fn two_hundred_concurrent_subscribers_all_receive_every_event() {
    let app = TestApp::start().await;
    let (key, _, org) = app.user("many@example.com").await;
    let (_, build) = app.seed_build(org, "many").await;
    app.append(build, EventKind::StepStarted, "generate").await;
    let url = format!("ws://{}/graphql", app.addr);
    let mut clients = Vec::new();
    for i in 0..200 {
        let url = url.clone();
        let key = key.clone();
        clients.push(tokio::spawn(async move {
            let mut ws = Ws::connect(&url, json!({ "Authorization": format!("Bearer {key}") })).await;
            ws.expect_ack().await;
            ws.subscribe(&i.to_string(), BUILD_EVENTS, json!({ "id": build })).await;
            // The first event is the backlog: once it is here the subscriber is live.
            let (first, _) = ws.collect(&i.to_string(), 1).await;
            (ws, first)
        }));
    }
    let mut subs = Vec::new();
    for c in clients {
        subs.push(c.await.unwrap());
    }
    for i in 0..30 {
        app.append(build, EventKind::Log, &format!("line {i}")).await;
    }
    app.append(build, EventKind::BuildSucceeded, "done").await;
    let mut readers = Vec::new();
    for (i, (mut ws, first)) in subs.into_iter().enumerate() {
        readers.push(tokio::spawn(async move {
            let (rest, completed) = ws.collect(&i.to_string(), 100).await;
            let mut all = first;
            all.extend(rest);
            (seqs(&all), completed)
        }));
    }
    for r in readers {
        let (seqs, completed) = r.await.unwrap();
        assert_eq!(seqs, (1..=32).collect::<Vec<_>>());
        assert!(completed);
    }
    // Every subscriber shared one feed; all are gone now.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.state.hub.stats().subscribers, 0);
}

#[tokio::test]
async fn websocket_refuses_missing_or_bad_credentials_and_other_orgs_builds() {
    let app = TestApp::start().await;
    let (key, _, _) = app.user("ws-a@example.com").await;
    let (_, _, org_b) = app.user("ws-b@example.com").await;
    let (_, build_b) = app.seed_build(org_b, "ws-b").await;

    let mut ws = app.ws(json!({})).await;
    let m = ws.next().await.unwrap();
    assert!(m["closed"].as_str().unwrap().starts_with("UNAUTHENTICATED"), "{m}");

    let mut ws = app.ws(json!({ "Authorization": "Bearer bmm_not-a-real-key-at-all-not-a-real-key-at-all" })).await;
    let m = ws.next().await.unwrap();
    assert!(m["closed"].as_str().unwrap().starts_with("UNAUTHENTICATED"), "{m}");

    let mut ws = app.ws(json!({ "Authorization": format!("Bearer {key}") })).await;
    ws.expect_ack().await;
    ws.subscribe("x", BUILD_EVENTS, json!({ "id": build_b })).await;
    let (out, _) = ws.collect("x", 5).await;
    assert_eq!(code(&out[0]), Some("NOT_FOUND"), "{:?}", out);
    ws.subscribe("y", BUILD_EVENTS, json!({ "id": "not-a-uuid" })).await;
    let (out, _) = ws.collect("y", 5).await;
    assert_eq!(code(&out[0]), Some("BAD_USER_INPUT"), "{:?}", out);
    assert_eq!(out[0]["errors"][0]["extensions"]["field"], "buildId");
}

#[tokio::test]
async fn events_keep_flowing_after_the_listen_connection_is_killed() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::start().await;
    let (key, _, org) = app.user("relisten@example.com").await;
    let (_, build) = app.seed_build(org, "relisten").await;
    app.append(build, EventKind::StepStarted, "first").await;
    let mut ws = app.ws(json!({ "Authorization": format!("Bearer {key}") })).await;
    ws.expect_ack().await;
    ws.subscribe("r", BUILD_EVENTS, json!({ "id": build })).await;
    let (first, _) = ws.collect("r", 1).await;
    assert_eq!(seqs(&first), vec![1]);

    // Kill the API's LISTEN connection (as a database restart or network cut would).
    let before = app.state.hub.stats().reconnects;
    let mut conn = app.conn().await;
    let killed = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN \"bmm_build_events\"%' AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(killed, 1, "exactly one build-event LISTEN connection per process");
    drop(conn);
    // Events appended while it is down are not lost.
    for i in 0..5 {
        app.append(build, EventKind::Log, &format!("during outage {i}")).await;
    }
    app.append(build, EventKind::BuildSucceeded, "done").await;
    let (rest, completed) = ws.collect("r", 100).await;
    assert_eq!(seqs(&rest), (2..=7).collect::<Vec<_>>());
    assert!(completed);
    for _ in 0..100 {
        if app.state.hub.stats().listening && app.state.hub.stats().reconnects > before {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the listener did not reconnect: {:?}", app.state.hub.stats());
}

#[tokio::test]
async fn session_cookie_on_the_upgrade_request_authenticates_the_websocket() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::start().await;
    let (_, user, org) = app.user("wscookie@example.com").await;
    let (_, build) = app.seed_build(org, "ws-cookie").await;
    app.append(build, EventKind::BuildCancelled, "cancelled").await;
    let token = {
        let mut conn = app.conn().await;
        bmm_auth::identity::create_session(&mut conn, user, org, None, None).await.unwrap().0
    };
    let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    req.headers_mut().insert("Cookie", format!("bmm_session={token}").parse().unwrap());
    // As the dashboard's own page sends it.
    req.headers_mut().insert("Origin", app.state.cfg.issuer().parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    stream.send(Message::Text(json!({ "type": "connection_init" }).to_string().into())).await.unwrap();
    let mut ws = Ws { stream };
    ws.expect_ack().await;
    ws.subscribe("c", BUILD_EVENTS, json!({ "id": build })).await;
    let (events, completed) = ws.collect("c", 10).await;
    assert_eq!(seqs(&events), vec![1]);
    assert_eq!(events[0]["data"]["buildEvents"]["kind"], "BUILD_CANCELLED");
    assert!(completed);
}

#[tokio::test]
async fn server_status_sends_the_current_state_then_changes() {
    use bmm_db::schema::{builds, servers};
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let app = TestApp::start().await;
    let (key, _, org) = app.user("status@example.com").await;
    let (server, build) = app.seed_build(org, "status").await;
    let mut ws = app.ws(json!({ "Authorization": format!("Bearer {key}") })).await;
    ws.expect_ack().await;
    ws.subscribe(
        "s",
        "subscription($id: ID!) { serverStatus(serverId: $id) { status latestBuildStatus latestBuildStep } }",
        json!({ "id": server }),
    )
    .await;
    let (first, _) = ws.collect("s", 1).await;
    assert_eq!(first[0]["data"]["serverStatus"]["status"], "BUILDING", "{first:?}");
    assert_eq!(first[0]["data"]["serverStatus"]["latestBuildStatus"], "QUEUED");

    let mut conn = app.conn().await;
    diesel::update(builds::table.filter(builds::id.eq(build)))
        .set((builds::status.eq("RUNNING"), builds::current_step.eq(Some("deploy"))))
        .execute(&mut conn)
        .await
        .unwrap();
    app.append(build, EventKind::StepStarted, "deploy").await;
    let (next, _) = ws.collect("s", 1).await;
    assert_eq!(next[0]["data"]["serverStatus"]["latestBuildStatus"], "RUNNING", "{next:?}");
    assert_eq!(next[0]["data"]["serverStatus"]["latestBuildStep"], "deploy");

    diesel::update(servers::table.filter(servers::id.eq(server)))
        .set(servers::status.eq("DELETED"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (last, completed) = ws.collect("s", 5).await;
    assert_eq!(last.last().unwrap()["data"]["serverStatus"]["status"], "DELETED", "{last:?}");
    assert!(completed, "the stream ends when the server is deleted");
}

/// Cross-site WebSocket hijacking: a page on another origin (even the same
/// site, another port) cannot ride the victim's session cookie.
#[tokio::test]
async fn cookie_websocket_from_another_origin_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::start().await;
    let (key, user, org) = app.user("cswsh@example.com").await;
    let token = {
        let mut conn = app.conn().await;
        bmm_auth::identity::create_session(&mut conn, user, org, None, None).await.unwrap().0
    };
    let upgrade = |origin: Option<&str>, cookie: bool| {
        let mut req = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        if cookie {
            req.headers_mut().insert("Cookie", format!("bmm_session={token}").parse().unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("Origin", o.parse().unwrap());
        }
        req
    };
    for origin in [Some("http://127.0.0.1:1"), Some("https://evil.example"), Some("null"), None] {
        match tokio_tungstenite::connect_async(upgrade(origin, true)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "origin {origin:?}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("FORBIDDEN") && body.contains("connection_init"), "{body}");
            }
            other => panic!("origin {origin:?}: the upgrade was not refused: {:?}", other.map(|_| ())),
        }
    }
    // A key in connection_init is not ambient: it works from any origin.
    use futures::SinkExt;
    let (mut stream, _) =
        tokio_tungstenite::connect_async(upgrade(Some("https://elsewhere.example"), false)).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {key}") } });
    stream.send(tokio_tungstenite::tungstenite::Message::Text(init.to_string().into())).await.unwrap();
    let mut ws = Ws { stream };
    ws.expect_ack().await;
}
