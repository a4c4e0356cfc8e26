//! Against real PostgreSQL: migrations up/down/up, the schema matches the SQL,
//! the event log's seq is dense under concurrency, audit writes and reads.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::events::{self, EventKind, NewEvent};
use crate::testing::TestDb;

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDb::empty().await;
    let applied = crate::migrate::run_pending(&db.url).await.unwrap();
    assert!(!applied.is_empty());
    assert!(crate::migrate::pending(&db.url).await.unwrap().is_empty());
    let reverted = crate::migrate::revert_all(&db.url).await.unwrap();
    assert_eq!(reverted.len(), applied.len());
    let pool = db.pool();
    let mut c = pool.get().await.unwrap();
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        table_name: String,
    }
    let left: Vec<Name> = diesel::sql_query(
        "SELECT table_name::text AS table_name FROM information_schema.tables WHERE table_schema='public' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut c)
    .await
    .unwrap();
    assert!(left.is_empty(), "down left tables: {:?}", left.iter().map(|n| &n.table_name).collect::<Vec<_>>());
    let again = crate::migrate::run_pending(&db.url).await.unwrap();
    assert_eq!(again.len(), applied.len());
}

/// Every table and column of `schema.rs` exists with the same nullability.
#[tokio::test]
async fn schema_rs_matches_the_migrated_database() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut c = pool.get().await.unwrap();
    #[derive(QueryableByName, Debug)]
    struct Col {
        #[diesel(sql_type = Text)]
        t: String,
        #[diesel(sql_type = Text)]
        c: String,
        #[diesel(sql_type = Text)]
        n: String,
    }
    let cols: Vec<Col> = diesel::sql_query(
        "SELECT table_name::text AS t, column_name::text AS c, is_nullable::text AS n FROM information_schema.columns WHERE table_schema='public' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut c)
    .await
    .unwrap();
    let schema_src = include_str!("schema.rs");
    let mut tables = std::collections::BTreeSet::new();
    for col in &cols {
        tables.insert(col.t.clone());
        let block_start = schema_src
            .find(&format!("    {} (", col.t))
            .unwrap_or_else(|| panic!("table {} missing from schema.rs", col.t));
        let block = &schema_src[block_start..];
        let block = &block[..block.find("\n    }").unwrap()];
        let line = block
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ->", col.c)))
            .unwrap_or_else(|| panic!("column {}.{} missing from schema.rs", col.t, col.c));
        assert_eq!(line.contains("Nullable<"), col.n == "YES", "nullability of {}.{}: {line}", col.t, col.c);
    }
    assert_eq!(schema_src.matches("diesel::table! {").count(), tables.len(), "schema.rs has tables the database lacks");
}

async fn seed_build(c: &mut diesel_async::AsyncPgConnection) -> (Uuid, Uuid) {
    let org = Uuid::new_v4();
    let server = Uuid::new_v4();
    let version = Uuid::new_v4();
    let build = Uuid::new_v4();
    use diesel_async::SimpleAsyncConnection;
    c.batch_execute(&format!(
        "INSERT INTO orgs (id, name, slug) VALUES ('{org}', 'o', 'o-{org}');
         INSERT INTO servers (id, org_id, slug, name) VALUES ('{server}', '{org}', 's-{server}', 's');
         INSERT INTO server_versions (id, org_id, server_id, version, spec, spec_digest, generator) VALUES ('{version}', '{org}', '{server}', 1, '{{}}', 'd', 'offline');
         INSERT INTO builds (id, org_id, server_id, version_id, workflow_id) VALUES ('{build}', '{org}', '{server}', '{version}', 'build-{build}');"
    ))
    .await
    .unwrap();
    (org, build)
}

#[tokio::test]
async fn event_seq_is_dense_under_concurrent_writers() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let (org, build) = seed_build(&mut pool.get().await.unwrap()).await;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = pool.get().await.unwrap();
            for i in 0..10 {
                let msg = format!("writer {w} line {i}");
                events::append(
                    &mut c,
                    NewEvent { build_id: build, step: "check", kind: EventKind::Log, message: &msg, data: None },
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = pool.get().await.unwrap();
    let all = events::list_after(&mut c, org, build, 0, 1000).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    let tail = events::list_after(&mut c, org, build, 35, 1000).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).next(), Some(36));
    // Another org sees nothing of this build.
    assert!(events::list_after(&mut c, Uuid::new_v4(), build, 0, 1000).await.unwrap().is_empty());
    // An event for a build that does not exist is not written.
    let missing = events::append(
        &mut c,
        NewEvent { build_id: Uuid::new_v4(), step: "x", kind: EventKind::Log, message: "m", data: None },
    )
    .await;
    assert!(matches!(missing, Err(diesel::result::Error::NotFound)), "{missing:?}");
}

#[tokio::test]
async fn audit_entries_are_org_scoped_and_filtered() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut c = pool.get().await.unwrap();
    let (org, _) = seed_build(&mut c).await;
    for action in ["server.create", "server.delete", "server.create"] {
        crate::audit::record(
            &mut c,
            crate::audit::Audit {
                org_id: org,
                user_id: None,
                action,
                resource_type: "server",
                resource_id: Some("x".into()),
                metadata: serde_json::json!({}),
                ip: Some("127.0.0.1".into()),
            },
        )
        .await;
    }
    // A write for an org that does not exist fails inside and is swallowed.
    crate::audit::record(
        &mut c,
        crate::audit::Audit {
            org_id: Uuid::new_v4(),
            user_id: None,
            action: "x",
            resource_type: "y",
            resource_id: None,
            metadata: serde_json::json!({}),
            ip: None,
        },
    )
    .await;
    let all = crate::audit::list(&mut c, org, None, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].id > all[1].id);
    let creates = crate::audit::list(&mut c, org, Some("server.create"), None, 10).await.unwrap();
    assert_eq!(creates.len(), 2);
    let page = crate::audit::list(&mut c, org, None, Some(all[0].id), 10).await.unwrap();
    assert_eq!(page.len(), 2);
}

#[tokio::test]
async fn server_health_changes_are_recorded_once_and_only_for_live_servers() {
    use crate::server_events::{self, Health, NewServerEvent, ServerEventKind};
    use futures::StreamExt;
    let db = TestDb::new().await;
    let pool = db.pool();
    let mut c = pool.get().await.unwrap();
    let (org, _build) = seed_build(&mut c).await;
    let server: Uuid = crate::schema::servers::table
        .filter(crate::schema::servers::org_id.eq(org))
        .select(crate::schema::servers::id)
        .first(&mut c)
        .await
        .unwrap();

    // Listen first: every event is announced when it commits.
    let (client, mut conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute(&format!("LISTEN {}", server_events::SERVER_EVENTS_CHANNEL)).await.unwrap();

    // A server still building is not the reconciler's to describe.
    assert_eq!(server_events::set_health(&mut c, server, Health::Down, Some("x")).await.unwrap(), None);
    diesel::update(crate::schema::servers::table.find(server))
        .set(crate::schema::servers::status.eq("LIVE"))
        .execute(&mut c)
        .await
        .unwrap();
    let reason = "its container is gone; redeploying";
    assert_eq!(
        server_events::set_health(&mut c, server, Health::Degraded, Some(reason)).await.unwrap(),
        Some(Health::Live)
    );
    // The same status and reason again changes nothing and records nothing.
    assert_eq!(server_events::set_health(&mut c, server, Health::Degraded, Some(reason)).await.unwrap(), None);
    assert_eq!(
        server_events::set_health(&mut c, server, Health::Live, Some("ignored")).await.unwrap(),
        Some(Health::Degraded)
    );
    let (status, why): (String, Option<String>) = crate::schema::servers::table
        .find(server)
        .select((crate::schema::servers::status, crate::schema::servers::status_reason))
        .first(&mut c)
        .await
        .unwrap();
    assert_eq!((status.as_str(), why), ("LIVE", None), "LIVE carries no reason");

    server_events::append(
        &mut c,
        NewServerEvent { server_id: server, kind: ServerEventKind::Restarted, message: "started again", data: None },
    )
    .await
    .unwrap();
    let all = server_events::list_after(&mut c, org, server, 0, 100).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["STATUS_CHANGED", "STATUS_CHANGED", "RESTARTED"]);
    assert_eq!(all[0].message, format!("LIVE → DEGRADED: {reason}"));
    assert_eq!(all[0].data.as_ref().unwrap()["to"], "DEGRADED");
    let newest = server_events::latest(&mut c, org, server, 1).await.unwrap();
    assert_eq!(newest[0].id, all[2].id);
    assert_eq!(server_events::list_after(&mut c, org, server, all[0].id, 100).await.unwrap().len(), 2);
    // Another org sees nothing; an event for a server that does not exist is not written.
    assert!(server_events::list_after(&mut c, Uuid::new_v4(), server, 0, 100).await.unwrap().is_empty());
    let missing = server_events::append(
        &mut c,
        NewServerEvent { server_id: Uuid::new_v4(), kind: ServerEventKind::Restarted, message: "m", data: None },
    )
    .await;
    assert!(matches!(missing, Err(diesel::result::Error::NotFound)), "{missing:?}");

    for e in &all {
        let note = tokio::time::timeout(std::time::Duration::from_secs(5), notes.recv()).await.unwrap().unwrap();
        let note: serde_json::Value = serde_json::from_str(&note).unwrap();
        assert_eq!(note["id"], e.id, "{note}");
        assert_eq!(note["server_id"], server.to_string());
    }
}
