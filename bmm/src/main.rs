//! `bmm`: the one binary of BuildMyMCP. It wires the crates together and holds
//! no logic of its own: every subcommand calls into a library crate.

mod doctor;
mod keys;
mod serve;
mod telemetry;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use bmm_core::Config;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bmm", version, about = "BuildMyMCP: describe tools, get a deployed, OAuth-protected MCP server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API, gateway and build worker in one process, for local use.
    Dev,
    /// The API: GraphQL, OAuth, gateway and dashboard.
    Api,
    /// The build worker (Temporal activities and workflows).
    Worker,
    /// Apply pending database migrations.
    Migrate {
        /// Revert every migration instead (destroys all data).
        #[arg(long)]
        down_all: bool,
    },
    /// Check PostgreSQL, Temporal, Docker, the node toolchain and the runtime image.
    Doctor,
    /// Organisations.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Sign-in.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The master keys that seal secrets and signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every sealed value under the first key of BMM_SECRET_KEY, then
    /// retire the others (a durable workflow; running it again attaches to it).
    RotateMaster {
        /// Values per table per batch (one transaction each).
        #[arg(long, default_value_t = bmm_workflows::rotation::DEFAULT_BATCH_SIZE)]
        batch_size: i64,
        /// Print progress until the rotation finishes.
        #[arg(long)]
        wait: bool,
    },
    /// The configured keys, the values under each, retired keys and the rotation's progress.
    Status,
    /// Print a new random master key (64 hex characters).
    Generate,
    /// After a suspected leak: stop signing with and publishing every OAuth
    /// signing key now (a new one is made; issued access tokens stop verifying).
    RevokeSigningKeys,
    /// After a suspected leak: revoke every OAuth refresh token (clients authorize again).
    RevokeRefreshTokens,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Print a new API key (`bmm_…`) for EMAIL's org, creating the user and org when missing.
    CreateApiKey {
        #[arg(long)]
        email: String,
        /// A name that tells this key apart in the dashboard.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print a sign-in URL for EMAIL (for operators and scripts).
    MagicLink {
        #[arg(long)]
        email: String,
        /// Where to land after signing in (a path on the dashboard).
        #[arg(long)]
        next: Option<String>,
    },
}

/// A mistake in what the user typed: said plainly, exit code 2 like clap's usage errors.
fn user_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.to_string()))
}

#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprint!("bmm: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    // The master key is read; nothing this process starts (node, sh) may inherit it.
    for var in bmm_core::master_key::SECRET_ENV {
        // SAFETY: no other thread exists yet (the runtime is built below, and
        // the key command's reader threads have been joined), so nothing reads
        // the environment while it changes.
        unsafe { std::env::remove_var(var) };
    }
    // Debug builds keep large futures (schema validation, RSA) on the stack:
    // the default 2 MiB worker stack is too small for them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 * 1024 * 1024)
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli.command, config));
    match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("bmm: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("bmm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cfg: Arc<Config>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Doctor => Ok(doctor::run(&cfg).await),
        Command::Migrate { down_all } => {
            let done = if down_all {
                bmm_db::migrate::revert_all(&cfg.database_url).await?
            } else {
                bmm_db::migrate::run_pending(&cfg.database_url).await?
            };
            if done.is_empty() {
                println!("database is up to date");
            }
            for v in done {
                println!("{} {v}", if down_all { "reverted" } else { "applied" });
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Org { command: OrgCommand::CreateApiKey { email, name } } => {
            let pool = bmm_db::connect(&cfg.database_url, 2)?;
            let mut conn = pool.get().await.context("PostgreSQL")?;
            let (user, org) = bmm_auth::identity::ensure_user_and_org(&mut conn, &email).await.map_err(user_error)?;
            let (key, _info) = bmm_auth::identity::create_api_key(&mut conn, org.id, user.id, &name).await?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth { command: AuthCommand::MagicLink { email, next } } => {
            let pool = bmm_db::connect(&cfg.database_url, 2)?;
            let mut conn = pool.get().await.context("PostgreSQL")?;
            let email = bmm_auth::identity::normalize_email(&email).map_err(user_error)?;
            let url = bmm_auth::magic::create_magic_link(&mut conn, &cfg, &email, next.as_deref(), None).await?;
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::RotateMaster { batch_size, wait } } => {
            keys::rotate_master(&cfg, batch_size, wait).await
        }
        Command::Keys { command: KeysCommand::Status } => keys::status(&cfg).await,
        Command::Keys { command: KeysCommand::Generate } => Ok(keys::generate()),
        Command::Keys { command: KeysCommand::RevokeSigningKeys } => keys::revoke_signing_keys(&cfg).await,
        Command::Keys { command: KeysCommand::RevokeRefreshTokens } => keys::revoke_refresh_tokens(&cfg).await,
        Command::Dev => serve::dev(cfg).await.map(|()| ExitCode::SUCCESS),
        Command::Api => serve::api(cfg).await.map(|()| ExitCode::SUCCESS),
        Command::Worker => serve::worker(cfg).await.map(|()| ExitCode::SUCCESS),
    }
}
