//! Identity and the OAuth 2.1 authorization server: magic-link sign-in,
//! sessions, orgs, API keys, RS256 signing keys with rotation and the JWKS,
//! access-token minting and verification, the connection trace, connected
//! apps (grants and their revocation), and install snippets.
//!
//! This crate knows nothing of GraphQL; it must not touch servers' builds or
//! deployments (it only reads `servers` to check an OAuth `resource`).

pub mod error;
pub mod grants;
pub mod identity;
/// Taking back signing keys and refresh tokens after a suspected leak.
pub mod incident;
pub mod keys;
pub mod magic;
pub mod oauth;
pub mod pages;
pub mod principal;
pub mod snippets;
pub mod tokens;
pub mod trace;
pub mod web;

pub use error::AuthError;
pub use keys::KeyStore;
pub use magic::create_magic_link;
pub use web::{AuthState, routes};
