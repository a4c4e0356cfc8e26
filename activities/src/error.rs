//! How a step fails, and how that failure crosses into Temporal.
//!
//! A step either rejects its input (no retry can help: the failure carries a
//! non-retryable type that the workflow's retry policy also lists), or hits a
//! transient problem (Docker, the database, a model provider) that Temporal
//! retries with backoff. Messages are plain words for the person who started
//! the build: they never carry secrets or stack traces.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Failure types that no retry can fix. The workflow puts these in every
/// activity's retry policy as `non_retryable_error_types`.
pub mod kind {
    /// The spec does not validate.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The rendered source contains banned code.
    pub const BANNED_CODE: &str = "BannedCode";
    /// The rendered source does not type-check.
    pub const TYPE_ERRORS: &str = "TypeErrors";
    /// What the build was asked to make is unusable (no spec, no preview, bad description).
    pub const BAD_INPUT: &str = "BadInput";
    /// The deployed server answers, but not as the spec says (tools differ, protocol broken).
    pub const SMOKE_FAILED: &str = "SmokeFailed";
    /// The container did not start or did not become healthy.
    pub const DEPLOY_FAILED: &str = "DeployFailed";
    /// A build row or blob this build needs is missing.
    pub const MISSING: &str = "Missing";
    /// The container the deploy left is gone, stopped or moved (the runtime
    /// restarted, someone removed it): not the server's fault. The workflow
    /// deploys it again (the same idempotent deploy) instead of retrying the step.
    pub const CONTAINER_LOST: &str = "ContainerLost";
    /// A retryable failure: Docker, the database, a model provider, a slow container.
    pub const TRANSIENT: &str = "Transient";

    pub const NON_RETRYABLE: [&str; 8] =
        [INVALID_SPEC, BANNED_CODE, TYPE_ERRORS, BAD_INPUT, SMOKE_FAILED, DEPLOY_FAILED, MISSING, CONTAINER_LOST];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The input is wrong; `kind` is one of [`kind::NON_RETRYABLE`].
    #[error("{message}")]
    Rejected { kind: &'static str, message: String },
    /// Something outside the build failed; trying again later can help.
    #[error("{message}")]
    Transient { message: String },
    /// The workflow asked this activity to stop.
    #[error("cancelled")]
    Cancelled,
}

impl StepError {
    pub fn rejected(kind: &'static str, message: impl Into<String>) -> Self {
        StepError::Rejected { kind, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        StepError::Transient { message: message.into() }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Transient { .. })
    }

    /// The failure type recorded in Temporal's history.
    pub fn kind(&self) -> &'static str {
        match self {
            StepError::Rejected { kind, .. } => kind,
            StepError::Transient { .. } => kind::TRANSIENT,
            StepError::Cancelled => "Cancelled",
        }
    }

    pub fn into_activity_error(self) -> ActivityError {
        match self {
            StepError::Cancelled => ActivityError::cancelled(),
            StepError::Rejected { kind, message } => ActivityError::application(
                ApplicationFailure::builder(message).type_name(kind.to_owned()).non_retryable(true).build(),
            ),
            StepError::Transient { message } => ActivityError::application(
                ApplicationFailure::builder(message).type_name(kind::TRANSIENT.to_owned()).build(),
            ),
        }
    }
}

/// The database failed: retryable (PostgreSQL restarts, pool exhaustion).
impl From<diesel::result::Error> for StepError {
    fn from(e: diesel::result::Error) -> Self {
        tracing::warn!(error = %e, "database error in a build step");
        StepError::transient(format!("the database failed: {e}"))
    }
}

impl From<bmm_db::DbError> for StepError {
    fn from(e: bmm_db::DbError) -> Self {
        tracing::warn!(error = %e, "database error in a build step");
        StepError::transient(format!("the database failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_errors_are_not_retried_and_keep_their_type() {
        let e = StepError::rejected(kind::BANNED_CODE, "src/tools.ts:3 uses eval(");
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), "BannedCode");
        match e.into_activity_error() {
            ActivityError::Application(f) => {
                assert!(f.is_non_retryable());
                assert_eq!(f.type_name(), Some("BannedCode"));
                assert_eq!(f.to_string(), "src/tools.ts:3 uses eval(");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn transient_errors_are_retried() {
        let e = StepError::transient("Docker is unreachable");
        assert!(e.is_retryable());
        match e.into_activity_error() {
            ActivityError::Application(f) => assert!(!f.is_non_retryable()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(StepError::Cancelled.into_activity_error(), ActivityError::Cancelled { .. }));
    }
}
