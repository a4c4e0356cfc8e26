//! Benchmarks of the running platform (see bench/README.md): each binary under
//! `src/bin` starts the real platform through the e2e harness, drives it the
//! way users and clients do, and prints a table of figures.
//!
//! This crate owns measurement only: it never changes the platform's crates and
//! cleans up every container and image it causes to exist.

pub mod baseline;
pub mod docker;
pub mod mcp;
pub mod platform;
pub mod specs;
pub mod stats;
pub mod sys;
pub mod table;
pub mod ws;
