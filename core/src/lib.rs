//! Shared foundations of BuildMyMCP: typed configuration read once at start,
//! the secret box that encrypts user secrets and signing keys at rest, token
//! hashing, and content digests.
//!
//! This crate owns no I/O beyond reading its configuration file; it must not
//! depend on the database, Temporal or Docker.

pub mod config;
pub mod crypto;
pub mod digest;
pub mod slug;

pub use config::{Config, ConfigError};
