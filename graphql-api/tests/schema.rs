//! The checked-in `schema.graphql` (repo root) must match the schema the
//! server builds. Regenerate it with:
//!
//!     BMM_UPDATE_SCHEMA=1 cargo nextest run -p bmm-graphql-api schema

use std::sync::Arc;

#[tokio::test]
async fn schema_graphql_is_up_to_date() {
    // The pool connects lazily; the SDL needs no database.
    let pool = bmm_db::connect("postgres://bmm@127.0.0.1:1/unused", 1).unwrap();
    let cfg = Arc::new(bmm_core::Config::for_tests("postgres://bmm@127.0.0.1:1/unused"));
    let schema = bmm_graphql_api::build_schema(bmm_graphql_api::AppState::builder(cfg, pool).build());
    let sdl = schema.sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    if std::env::var_os("BMM_UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == sdl,
        "schema.graphql is out of date with the schema the server builds.\n\
         Regenerate it: BMM_UPDATE_SCHEMA=1 cargo nextest run -p bmm-graphql-api schema\n\
         and commit the diff (the dashboard builds against it)."
    );
}
