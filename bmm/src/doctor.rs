//! `bmm doctor`: is everything the platform needs here and answering? Each
//! check says what is wrong and the command that fixes it.

use std::process::ExitCode;
use std::time::Duration;

use bmm_core::Config;

struct Check {
    name: &'static str,
    result: Result<String, String>,
    fix: &'static str,
}

const TIMEOUT: Duration = Duration::from_secs(5);

async fn with_timeout<T>(f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, f).await.unwrap_or_else(|_| Err(format!("no answer within {}s", TIMEOUT.as_secs())))
}

async fn postgres(cfg: &Config) -> Result<String, String> {
    let pool = bmm_db::connect(&cfg.database_url, 1).map_err(|e| e.to_string())?;
    bmm_db::pool::check(&pool).await.map_err(|e| format!("cannot connect to {}: {e}", redact(&cfg.database_url)))?;
    let pending = bmm_db::migrate::pending(&cfg.database_url).await.map_err(|e| e.to_string())?;
    if pending.is_empty() {
        Ok("reachable, migrations applied".into())
    } else {
        Err(format!("{} migration(s) pending (run `bmm migrate`)", pending.len()))
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(unparseable URL)".into(),
    }
}

async fn temporal(cfg: &Config) -> Result<String, String> {
    use temporalio_client::{Connection, ConnectionOptions};
    let opts = ConnectionOptions::new(cfg.temporal_address.clone()).connect_timeout(TIMEOUT).build();
    Connection::connect(opts).await.map_err(|e| format!("cannot connect to {}: {e}", cfg.temporal_address))?;
    Ok(format!("answering at {}", cfg.temporal_address))
}

fn docker_client(cfg: &Config) -> Result<bollard::Docker, String> {
    let host = &cfg.docker_host;
    let r = if let Some(path) = host.strip_prefix("unix://") {
        bollard::Docker::connect_with_unix(path, 10, bollard::API_DEFAULT_VERSION)
    } else {
        bollard::Docker::connect_with_http(host, 10, bollard::API_DEFAULT_VERSION)
    };
    r.map_err(|e| format!("bad Docker host {host}: {e}"))
}

async fn docker(cfg: &Config) -> Result<String, String> {
    let d = docker_client(cfg)?;
    let v = d.version().await.map_err(|e| format!("no Docker daemon answers at {}: {e}", cfg.docker_host))?;
    Ok(format!("Docker {} at {}", v.version.unwrap_or_default(), cfg.docker_host))
}

async fn runtime_image(cfg: &Config) -> Result<String, String> {
    let d = docker_client(cfg)?;
    match d.inspect_image(&cfg.runtime_image).await {
        Ok(img) => {
            Ok(format!("{} ({})", cfg.runtime_image, img.id.unwrap_or_default().chars().take(19).collect::<String>()))
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            Err(format!("image {} is missing", cfg.runtime_image))
        }
        Err(e) => Err(format!("cannot inspect {}: {e}", cfg.runtime_image)),
    }
}

async fn toolchain(cfg: &Config) -> Result<String, String> {
    let bin = cfg.toolchain_dir.join("node_modules/.bin");
    let mut missing = Vec::new();
    for tool in ["tsc", "esbuild"] {
        if !bin.join(tool).exists() {
            missing.push(tool);
        }
    }
    for pkg in ["@modelcontextprotocol/sdk", "zod", "jose"] {
        if !cfg.toolchain_dir.join("node_modules").join(pkg).join("package.json").exists() {
            missing.push(pkg);
        }
    }
    if !missing.is_empty() {
        return Err(format!("{} missing in {}", missing.join(", "), cfg.toolchain_dir.display()));
    }
    let mut node = tokio::process::Command::new("node");
    for var in bmm_core::master_key::SECRET_ENV {
        node.env_remove(var);
    }
    let out = node.arg("--version").output().await.map_err(|e| format!("node is not on PATH: {e}"))?;
    Ok(format!(
        "node {} with tsc and esbuild in {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        cfg.toolchain_dir.display()
    ))
}

/// tsc and esbuild run only inside bubblewrap; a probe run inside it shows it works here.
async fn build_sandbox(cfg: &Config) -> Result<String, String> {
    bmm_spec::Toolchain::new(cfg.toolchain_dir.clone()).check_sandbox().await.map_err(|e| e.to_string())
}

pub async fn run(cfg: &Config) -> ExitCode {
    let checks = vec![
        Check {
            name: "PostgreSQL",
            result: with_timeout(postgres(cfg)).await,
            fix: "scripts/stack.sh postgres && bmm migrate",
        },
        Check { name: "Temporal", result: with_timeout(temporal(cfg)).await, fix: "scripts/stack.sh temporal" },
        Check { name: "Docker", result: with_timeout(docker(cfg)).await, fix: "scripts/stack.sh docker" },
        Check {
            name: "runtime image",
            result: with_timeout(runtime_image(cfg)).await,
            fix: "scripts/stack.sh runtime-image",
        },
        Check { name: "node toolchain", result: with_timeout(toolchain(cfg)).await, fix: "scripts/stack.sh toolchain" },
        Check {
            name: "build sandbox",
            result: with_timeout(build_sandbox(cfg)).await,
            fix: "apt-get install bubblewrap (scripts/stack.sh deps)",
        },
    ];
    let mut failed = 0;
    for c in &checks {
        match &c.result {
            Ok(detail) => println!("ok    {:<15} {detail}", c.name),
            Err(problem) => {
                failed += 1;
                println!("FAIL  {:<15} {problem}\n      fix: {}", c.name, c.fix);
            }
        }
    }
    println!("generator: {}", cfg.generator.name());
    if failed == 0 {
        println!("all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::FAILURE
    }
}
