//! The tool spec: its format ([`model`]), validation ([`validate()`]), the
//! renderer that turns a spec into the runner template's TypeScript
//! ([`render()`]), the syntax-tree check of handler code ([`syntax`]), the
//! banned-pattern scan ([`scan()`], a second layer), and the [`toolchain`]
//! that type-checks and bundles a rendered tree inside a sandbox.
//!
//! Owns `spec/` and embeds `runner-template/` at compile time. Everything but
//! [`toolchain`] is pure (no I/O); [`toolchain`] runs the local `tsc` and
//! `esbuild` processes on a directory. Never talks to the network or the database.

pub mod error;
pub mod model;
pub mod render;
pub mod scan;
pub mod syntax;
pub mod testing;
pub mod toolchain;
pub mod validate;

pub use error::{FieldError, SpecErrors};
pub use model::*;
pub use render::{HandlerLocation, Rendered, render};
pub use scan::{Finding, scan};
pub use syntax::{HandlerFinding, ToolFinding, check_handler, check_spec};
pub use toolchain::{CheckError, CheckFailure, Diagnostic, Toolchain, ToolchainError, write_tree};
pub use validate::validate;
