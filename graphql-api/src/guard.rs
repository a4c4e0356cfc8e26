//! The schema extension that enforces the rate limit on every operation
//! (HTTP and WebSocket alike) and makes sure every error leaving the API
//! carries a stable `extensions.code` and no internals.

use std::any::TypeId;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextRequest, NextSubscribe,
};
use async_graphql::{Request, Response, ServerError, ServerResult};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::context::{Caller, RequestMeta};
use crate::error::{ApiError, code, correlation_id, internal_error};
use crate::state::AppState;

pub struct Guard;

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExtension)
    }
}

struct GuardExtension;

fn from_request<T: 'static>(req: &Request) -> Option<&T> {
    req.data.get(&TypeId::of::<T>()).and_then(|b| b.downcast_ref::<T>())
}

#[async_trait::async_trait]
impl Extension for GuardExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(state) = ctx.data_opt::<AppState>() {
            let caller = from_request::<Caller>(&request).or_else(|| ctx.data_opt::<Caller>());
            let meta = from_request::<RequestMeta>(&request).or_else(|| ctx.data_opt::<RequestMeta>());
            let bucket = caller.cloned().unwrap_or(Caller(None)).bucket(meta);
            if let Err(retry_after_secs) = state.limiter.check(bucket) {
                let e = ApiError::RateLimited { retry_after_secs }.to_graphql();
                return Err(e.into_server_error(Default::default()));
            }
        }
        next.run(ctx, request).await
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        fix_errors(&mut resp.errors);
        resp
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(
            ctx,
            stream
                .map(|mut resp| {
                    fix_errors(&mut resp.errors);
                    resp
                })
                .boxed(),
        )
    }
}

/// Give every error a code. Errors without one come from async-graphql
/// itself: parse, validation and limit errors (no path) and argument
/// coercion are the client's to fix; anything else is internal and its
/// message is replaced, so nothing unvetted reaches the client.
pub fn fix_errors(errors: &mut [ServerError]) {
    for e in errors.iter_mut() {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if has_code {
            continue;
        }
        let client_side = e.path.is_empty()
            || e.message.starts_with("Failed to parse")
            || e.message.starts_with("Invalid value for argument")
            || e.message.starts_with("Internal error: Failed to parse");
        if client_side {
            e.extensions.get_or_insert_with(Default::default).set("code", code::BAD_USER_INPUT);
        } else {
            let id = correlation_id();
            tracing::error!(correlation_id = %id, error = %e.message, path = ?e.path, "unclassified resolver error");
            let safe = internal_error(&id);
            e.message = safe.message;
            e.extensions = safe.extensions;
        }
    }
}
