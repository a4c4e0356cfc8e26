//! Every GraphQL document the dashboard sends (web/js/queries.js) must
//! validate against this schema: a renamed field breaks this test, not the
//! dashboard in front of a user.

use std::sync::Arc;

use async_graphql::Request;

/// The documents of queries.js: template literals, with `${NAME}` replaced by
/// the plain string constant of that name.
fn documents(js: &str) -> Vec<(String, String)> {
    let mut consts = std::collections::HashMap::new();
    for line in js.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("const ")
            && let Some((name, value)) = rest.split_once(" = '")
        {
            consts.insert(name.trim().to_owned(), value.trim_end_matches("';").to_owned());
        }
    }
    let mut docs = Vec::new();
    let mut rest = js;
    while let Some(start) = rest.find("export const ") {
        rest = &rest[start + "export const ".len()..];
        let name = rest.split_whitespace().next().unwrap_or_default().to_owned();
        let Some(open) = rest.find('`') else { break };
        let body_start = &rest[open + 1..];
        let Some(close) = body_start.find('`') else { break };
        let mut doc = body_start[..close].to_owned();
        for (k, v) in &consts {
            doc = doc.replace(&format!("${{{k}}}"), v);
        }
        docs.push((name, doc));
        rest = &body_start[close + 1..];
    }
    docs
}

#[tokio::test]
async fn every_dashboard_document_validates_against_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/js/queries.js");
    let Ok(js) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: the dashboard's documents are checked against the schema here");
    };
    let docs = documents(&js);
    assert!(docs.len() >= 10, "found only {} documents in queries.js", docs.len());
    let pool = bmm_db::connect("postgres://bmm@127.0.0.1:1/unused", 1).unwrap();
    let cfg = Arc::new(bmm_core::Config::for_tests("postgres://bmm@127.0.0.1:1/unused"));
    let unlimited = bmm_graphql_api::ratelimit::Rate { burst: 1_000_000, per_second: 1_000_000.0 };
    let limits = bmm_graphql_api::Limits { authenticated: unlimited, anonymous: unlimited, ..Default::default() };
    let schema = bmm_graphql_api::build_schema(bmm_graphql_api::AppState::builder(cfg, pool).limits(limits).build());
    let mut problems = Vec::new();
    // The check itself must catch a mismatch.
    let canary = ("CANARY".to_owned(), "query { me { id noSuchField } }".to_owned());
    for (name, doc) in std::iter::once(&canary).chain(&docs) {
        // No variables: "required variable missing" errors are expected; schema mismatches are not.
        let resp = if doc.trim_start().starts_with("subscription") {
            use futures::StreamExt;
            schema.execute_stream(Request::new(doc.clone())).next().await.unwrap()
        } else {
            schema.execute(Request::new(doc.clone())).await
        };
        for e in resp.errors {
            let m = &e.message;
            if m.contains("Unknown") || m.contains("Cannot query") || m.contains("not defined") || m.contains("Syntax")
            {
                problems.push(format!("{name}: {m}"));
            }
        }
    }
    assert!(problems.first().is_some_and(|p| p.starts_with("CANARY")), "the canary was not caught: {problems:?}");
    problems.remove(0);
    assert!(problems.is_empty(), "dashboard documents that do not match the schema:\n{}", problems.join("\n"));
}
