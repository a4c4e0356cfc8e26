//! The build's activities: everything the workflow does that touches the
//! world (database, node toolchain, the server runtime, the network) lives
//! here, and the worker that runs them.
//!
//! Workflow logic (order, retries, compensation) belongs to `bmm-workflows`;
//! where containers run (Docker, Swarm) belongs to `bmm-runtime`.

/// The MCP client that smoke-tests a new container.
pub mod smoke;

pub mod blobs;
pub mod build;
pub mod error;
/// The master-key rotation's activities.
pub mod keys;
pub mod model;
/// The reconciler's pass: desired state (the database) against actual (the runtime).
pub mod reconcile;
pub mod report;
pub mod steps;

pub use build::BuildActivities;
pub use error::{StepError, kind};
pub use keys::KeyActivities;
pub use model::*;
