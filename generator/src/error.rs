//! The one error type of the generator, classified by who can fix it.

/// Why a spec could not be generated.
///
/// Messages are written for the person who asked for the server: they never
/// contain model output, API keys or internal addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The user's input (description, OpenAPI document, instruction) is
    /// unusable. `field` names the input field. Retrying the same input fails again.
    #[error("{field}: {message}")]
    BadInput { field: String, message: String },
    /// The model provider could not be reached or kept failing (429, 5xx,
    /// overloaded, timeouts) after the client's own retries, or refused our
    /// credentials. `retryable` says whether trying again later can help.
    #[error("the model provider failed: {message}")]
    Upstream { message: String, retryable: bool },
    /// The model answered, but not with a usable spec, even after the client
    /// asked it to correct itself.
    #[error("the model did not produce a usable tool spec: {message}")]
    BadOutput { message: String },
}

impl GenerateError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        GenerateError::BadInput { field: field.into(), message: message.into() }
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        GenerateError::Upstream { message: message.into(), retryable: true }
    }

    pub fn bad_output(message: impl Into<String>) -> Self {
        GenerateError::BadOutput { message: message.into() }
    }

    /// Whether the same request may succeed later (a durable workflow retries these).
    pub fn is_retryable(&self) -> bool {
        matches!(self, GenerateError::Upstream { retryable: true, .. })
    }

    /// The input field at fault, for `BAD_USER_INPUT` errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            GenerateError::BadInput { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_upstream_failures_are_retryable() {
        assert!(GenerateError::upstream("HTTP 529").is_retryable());
        assert!(!GenerateError::Upstream { message: "bad key".into(), retryable: false }.is_retryable());
        assert!(!GenerateError::bad_input("description", "empty").is_retryable());
        assert!(!GenerateError::bad_output("not JSON").is_retryable());
    }

    #[test]
    fn bad_input_names_its_field() {
        let e = GenerateError::bad_input("openapi", "Swagger 2.0 is not supported");
        assert_eq!(e.field(), Some("openapi"));
        assert_eq!(e.to_string(), "openapi: Swagger 2.0 is not supported");
    }
}
