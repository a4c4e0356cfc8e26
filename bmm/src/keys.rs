//! `bmm keys …`: the master keys' state, starting a rotation, and a new key.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bmm_core::Config;
use rand::RngCore;

/// Print a new master key (64 hex characters) for BMM_SECRET_KEY.
pub fn generate() -> ExitCode {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    println!("{}", hex::encode(key));
    ExitCode::SUCCESS
}

/// The configured keys, how many values each holds, retired keys and the rotation's progress.
pub async fn status(cfg: &Config) -> anyhow::Result<ExitCode> {
    let pool = bmm_db::connect(&cfg.database_url, 2)?;
    let mut conn = pool.get().await.context("PostgreSQL")?;
    let sb = &cfg.secret_box;
    let counts = bmm_db::master_keys::counts(&mut conn).await?;
    let retired = bmm_db::master_keys::list_retired(&mut conn).await?;
    let remaining = bmm_db::master_keys::remaining(&mut conn, &sb.key_id).await?;
    println!("master keys (BMM_SECRET_KEY, the first seals):");
    for (i, id) in sb.key_ids().iter().enumerate() {
        let r = retired.iter().find(|r| &r.key_id == id);
        let state = match (i, r) {
            (_, Some(r)) => format!("retired {} (by {})", r.retired_at.format("%Y-%m-%d %H:%M:%S UTC"), r.rotation),
            (0, None) => "current".to_owned(),
            (_, None) => "opens only".to_owned(),
        };
        println!("  {id}  {state}");
    }
    println!("sealed values:");
    for c in &counts {
        let key = c.key_id.as_deref().unwrap_or("(legacy format, no key id)");
        println!("  {:<13} {:<28} {}", c.table, key, c.values);
    }
    println!("not yet under {}: {remaining}", sb.key_id);
    let temporal = bmm_workflows::client::connect(cfg).await;
    match temporal {
        Ok(client) => match bmm_workflows::rotation::rotation_progress(&client, &sb.key_id).await? {
            None => println!("rotation to {}: never started (`bmm keys rotate-master`)", sb.key_id),
            Some(s) => {
                print!("rotation to {}: {}", sb.key_id, s.status);
                if let Some(p) = s.progress {
                    print!(
                        ", {} ({} re-wrapped in {} batch(es){}",
                        p.phase,
                        p.rewrapped,
                        p.batches,
                        p.remaining.map(|r| format!(", {r} left")).unwrap_or_default()
                    );
                    if !p.retired.is_empty() {
                        print!("; retired {}", p.retired.join(", "));
                    }
                    print!(")");
                }
                println!();
            }
        },
        Err(e) => println!("rotation: Temporal is unreachable ({e})"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Start (or attach to) the rotation to the configured current key; with
/// `wait`, print progress until it finishes.
pub async fn rotate_master(cfg: &Config, batch_size: i64, wait: bool) -> anyhow::Result<ExitCode> {
    if batch_size < 1 {
        return Err(crate::user_error("--batch-size must be at least 1"));
    }
    let sb = &cfg.secret_box;
    let pool = bmm_db::connect(&cfg.database_url, 2)?;
    // Refuses a first key that an earlier rotation retired.
    bmm_db::master_keys::apply_retired(&pool, sb).await.map_err(crate::user_error)?;
    let client = bmm_workflows::client::connect(cfg).await?;
    let id = bmm_workflows::rotation::start_rotation(&client, cfg, batch_size).await?;
    println!("rotation to master key {} running as workflow {id}", sb.key_id);
    println!("  {}", cfg.temporal_workflow_url(&id));
    if !wait {
        println!("follow it with `bmm keys status`");
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        match bmm_workflows::rotation::rotation_progress(&client, &sb.key_id).await? {
            Some(s) if s.status == "Running" => {
                if let Some(p) = s.progress {
                    let left = p.remaining.map(|r| r.to_string()).unwrap_or_else(|| "?".into());
                    println!("{}: {} re-wrapped, {left} left", p.phase, p.rewrapped);
                }
            }
            Some(s) if s.status == "Completed" => {
                let p = s.progress.unwrap_or_default();
                println!("done: {} re-wrapped; retired {}", p.rewrapped, p.retired.join(", "));
                return Ok(ExitCode::SUCCESS);
            }
            Some(s) => {
                eprintln!("bmm: the rotation ended {} (see the Web UI link above)", s.status);
                return Ok(ExitCode::FAILURE);
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn revoke_signing_keys(cfg: &Config) -> anyhow::Result<ExitCode> {
    let pool = bmm_db::connect(&cfg.database_url, 2)?;
    let mut conn = pool.get().await.context("PostgreSQL")?;
    let n = bmm_auth::incident::revoke_signing_keys(&mut conn).await?;
    println!("{n} signing key(s) revoked; every process signs with a new key within a minute");
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_refresh_tokens(cfg: &Config) -> anyhow::Result<ExitCode> {
    let pool = bmm_db::connect(&cfg.database_url, 2)?;
    let mut conn = pool.get().await.context("PostgreSQL")?;
    let n = bmm_auth::incident::revoke_refresh_tokens(&mut conn).await?;
    println!("{n} refresh token(s) revoked; clients must authorize again");
    Ok(ExitCode::SUCCESS)
}
