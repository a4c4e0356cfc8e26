//! The crate's one error type. Messages are safe to show to the user; causes
//! that are internal (database, keys, mail transport) carry their detail for
//! the log only and display as a generic sentence.

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The email address is not one we can send a link to.
    #[error("{0}")]
    InvalidEmail(String),
    /// Some other input is unusable; the message says why in plain words.
    #[error("{0}")]
    BadInput(String),
    /// No valid session or API key: missing, unknown, expired or revoked.
    #[error("not signed in: {0}")]
    Unauthenticated(&'static str),
    #[error("too many sign-in links requested; wait a few minutes and try again")]
    RateLimited,
    /// A magic link that is unknown, expired or already used; the three are
    /// deliberately not told apart.
    #[error("this sign-in link is invalid, has expired or was already used; request a new one")]
    InvalidLink,
    #[error("not found")]
    NotFound,
    #[error("the sign-in email could not be sent")]
    Mail(String),
    #[error("signing keys are unavailable")]
    Keys(String),
    #[error("database error")]
    Db(#[from] diesel::result::Error),
    #[error("database unavailable")]
    Pool(String),
}

impl From<bmm_db::DbError> for AuthError {
    fn from(e: bmm_db::DbError) -> Self {
        match e {
            bmm_db::DbError::Query(q) => AuthError::Db(q),
            other => AuthError::Pool(other.to_string()),
        }
    }
}

impl AuthError {
    /// Whether the error is the caller's fault (and so safe and useful to show as is).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            AuthError::InvalidEmail(_)
                | AuthError::BadInput(_)
                | AuthError::Unauthenticated(_)
                | AuthError::RateLimited
                | AuthError::InvalidLink
                | AuthError::NotFound
        )
    }
}
