//! The GraphQL schema: one module per domain, joined with `MergedObject` /
//! `MergedSubscription`. [`build_schema`] is the only place it is assembled;
//! the server and the SDL-export test both call it.

use async_graphql::{MergedObject, MergedSubscription, Schema};

use crate::guard::Guard;
use crate::state::AppState;

pub mod account;
pub mod audit;
pub mod builds;
pub mod connected_apps;
pub mod previews;
pub mod servers;
pub mod types;

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    account::AccountQuery,
    servers::ServerQuery,
    builds::BuildQuery,
    audit::AuditQuery,
    connected_apps::ConnectedAppsQuery,
);

#[derive(MergedObject, Default)]
pub struct MutationRoot(
    account::AccountMutation,
    previews::PreviewMutation,
    servers::ServerMutation,
    builds::BuildMutation,
    connected_apps::ConnectedAppsMutation,
);

#[derive(MergedSubscription, Default)]
pub struct SubscriptionRoot(builds::BuildSubscription, servers::ServerSubscription);

pub type AppSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema with its guard rails (depth, complexity, rate limit, error
/// codes) and the application state as schema data.
pub fn build_schema(state: AppState) -> AppSchema {
    let limits = state.limits;
    let dev = state.cfg.dev;
    let builder = Schema::build(QueryRoot::default(), MutationRoot::default(), SubscriptionRoot::default());
    // Introspection maps the whole API for anyone; the SDL is in the repo
    // (schema.graphql) for those who need it, and GraphiQL is a dev tool.
    let builder = if dev { builder } else { builder.disable_introspection() };
    builder
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .extension(Guard)
        .data(state)
        .finish()
}
