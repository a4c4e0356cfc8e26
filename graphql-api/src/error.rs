//! The API's one error type, converted once at the edge into a GraphQL error
//! with a stable `extensions.code`. Internal causes are logged with a
//! correlation id; the client sees only the id.
//!
//! `ApiError` deliberately does not implement `Display`: async-graphql turns
//! any `Display` error into a message verbatim, and an internal cause must
//! never reach a client that way.

use async_graphql::ErrorExtensions;

/// The stable codes clients switch on.
pub mod code {
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    pub const FORBIDDEN: &str = "FORBIDDEN";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const INTERNAL: &str = "INTERNAL";
}

#[derive(Debug, Clone)]
pub enum ApiError {
    /// No valid session or API key.
    Unauthenticated(String),
    /// Signed in, but not allowed to do this.
    Forbidden(String),
    /// No such thing in the caller's org (another org's ids look the same).
    NotFound(&'static str),
    /// Input the caller can fix; `field` names the argument or input field.
    BadInput { field: String, message: String },
    /// Too many requests; try again after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// A dependency failed in a way the user should read about (e.g. the
    /// model provider is overloaded); `INTERNAL`, with this vetted message.
    Upstream(String),
    /// Anything else. The detail is logged, never shown.
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadInput { field: field.into(), message: message.into() }
    }

    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(detail.to_string())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => code::UNAUTHENTICATED,
            ApiError::Forbidden(_) => code::FORBIDDEN,
            ApiError::NotFound(_) => code::NOT_FOUND,
            ApiError::BadInput { .. } => code::BAD_USER_INPUT,
            ApiError::RateLimited { .. } => code::RATE_LIMITED,
            ApiError::Upstream(_) | ApiError::Internal(_) => code::INTERNAL,
        }
    }

    /// The GraphQL error: message safe to show, `code` (and `field`,
    /// `retryAfter` or `correlationId`) in the extensions.
    pub fn to_graphql(&self) -> async_graphql::Error {
        match self {
            ApiError::Unauthenticated(m) => {
                async_graphql::Error::new(m.clone()).extend_with(|_, e| e.set("code", code::UNAUTHENTICATED))
            }
            ApiError::Forbidden(m) => {
                async_graphql::Error::new(m.clone()).extend_with(|_, e| e.set("code", code::FORBIDDEN))
            }
            ApiError::NotFound(what) => async_graphql::Error::new(format!("{what} not found"))
                .extend_with(|_, e| e.set("code", code::NOT_FOUND)),
            ApiError::BadInput { field, message } => {
                let field = field.clone();
                async_graphql::Error::new(format!("{field}: {message}")).extend_with(move |_, e| {
                    e.set("code", code::BAD_USER_INPUT);
                    e.set("field", field.clone());
                })
            }
            ApiError::RateLimited { retry_after_secs } => {
                let secs = *retry_after_secs;
                async_graphql::Error::new(format!("too many requests; try again in {secs} s")).extend_with(
                    move |_, e| {
                        e.set("code", code::RATE_LIMITED);
                        e.set("retryAfter", secs);
                    },
                )
            }
            ApiError::Upstream(message) => {
                let id = correlation_id();
                tracing::warn!(correlation_id = %id, error = %message, "upstream failure");
                let id2 = id.clone();
                async_graphql::Error::new(format!("{message} (reference {id})")).extend_with(move |_, e| {
                    e.set("code", code::INTERNAL);
                    e.set("correlationId", id2.clone());
                })
            }
            ApiError::Internal(detail) => {
                let id = correlation_id();
                tracing::error!(correlation_id = %id, error = %detail, "internal error");
                internal_error(&id)
            }
        }
    }
}

/// The client-facing form of an internal error.
pub fn internal_error(correlation_id: &str) -> async_graphql::Error {
    let id = correlation_id.to_owned();
    async_graphql::Error::new(format!("internal error; quote reference {correlation_id} when reporting it"))
        .extend_with(move |_, e| {
            e.set("code", code::INTERNAL);
            e.set("correlationId", id.clone());
        })
}

/// A short id that ties a client-visible error to its log line.
pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        e.to_graphql()
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<bmm_db::DbError> for ApiError {
    fn from(e: bmm_db::DbError) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for ApiError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        ApiError::Internal(format!("database pool: {e}"))
    }
}

impl From<bmm_auth::AuthError> for ApiError {
    fn from(e: bmm_auth::AuthError) -> Self {
        use bmm_auth::AuthError as A;
        match e {
            A::Unauthenticated(m) => ApiError::Unauthenticated(format!("not signed in: {m}")),
            A::NotFound => ApiError::NotFound("resource"),
            A::BadInput(m) => ApiError::bad_input("input", m),
            A::InvalidEmail(m) => ApiError::bad_input("email", m),
            A::RateLimited => ApiError::RateLimited { retry_after_secs: 60 },
            other => ApiError::Internal(format!("auth: {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_message() {
        let e = ApiError::internal("password authentication failed for user bmm").to_graphql();
        assert!(!e.message.contains("password"), "{}", e.message);
        let ext = e.extensions.unwrap();
        assert_eq!(ext.get("code"), Some(&async_graphql::Value::from("INTERNAL")));
        assert!(ext.get("correlationId").is_some());
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = ApiError::bad_input("input.name", "must not be empty").to_graphql();
        assert_eq!(e.message, "input.name: must not be empty");
        let ext = e.extensions.unwrap();
        assert_eq!(ext.get("field"), Some(&async_graphql::Value::from("input.name")));
    }
}
