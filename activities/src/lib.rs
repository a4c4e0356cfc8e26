//! The build's activities: everything the workflow does that touches the
//! world (database, node toolchain, Docker, the network) lives here, and the
//! worker that runs them.
//!
//! Workflow logic (order, retries, compensation) belongs to `bmm-workflows`.

/// Docker through bollard: image, hardened container, removal, logs.
pub mod docker;
/// The MCP client that smoke-tests a new container.
pub mod smoke;

pub mod blobs;
pub mod build;
pub mod error;
pub mod model;
pub mod report;
pub mod steps;

pub use build::BuildActivities;
pub use error::{StepError, kind};
pub use model::*;
