//! The tool spec: its format ([`model`]), validation, the renderer that turns a
//! spec into the runner template's TypeScript, and the banned-pattern scan.
//!
//! Pure functions only: no network, no database, no processes.

pub mod model;

pub use model::*;
