//! Shared foundations of BuildMyMCP: typed configuration read once at start,
//! the keyring that encrypts user secrets and signing keys at rest (and where
//! its master keys are read from), token hashing, and content digests.
//!
//! This crate owns no I/O beyond reading its configuration (the file, and the
//! master keys' file or command); it must not depend on the database,
//! Temporal or Docker.

pub mod config;
pub mod crypto;
pub mod digest;
pub mod envelope;
pub mod master_key;
pub mod slug;

pub use config::{Config, ConfigError};
