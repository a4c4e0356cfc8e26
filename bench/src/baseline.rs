//! The hand-run pipeline: what a shell script does with the same spec, each
//! step a child process (`tsc --noEmit`, `esbuild`, `docker build`,
//! `docker run`, then a `/healthz` poll), timed one by one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bmm_spec::ToolSpec;
use tokio::process::Command;

use crate::docker::{docker, poll_healthy};

/// Milliseconds of each step of one hand-run.
#[derive(Debug, Clone, Default)]
pub struct HandRun {
    pub render_ms: f64,
    pub tsc_ms: f64,
    pub esbuild_ms: f64,
    pub docker_build_ms: f64,
    pub docker_run_ms: f64,
    pub healthz_ms: f64,
    pub total_ms: f64,
    /// `sha256:<hex>` of the bundle, to compare with the pipeline's.
    pub bundle_digest: String,
}

pub struct HandPipeline {
    pub toolchain: PathBuf,
    pub runtime_image: String,
    /// How often `/healthz` is polled.
    pub poll: Duration,
    /// Label put on what this run makes (`bmm.bench=<run>`), for cleanup.
    pub run_label: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(program: &Path, args: &[&str], cwd: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("NO_COLOR", "1")
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", program.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

impl HandPipeline {
    fn tsc(&self) -> PathBuf {
        let native = self.toolchain.join("node_modules/@typescript/typescript-linux-x64/lib/tsc");
        if native.is_file() { native } else { self.toolchain.join("node_modules/typescript/bin/tsc") }
    }

    /// Push `spec` through the steps; the container and image are removed afterwards.
    pub async fn run(&self, spec: &ToolSpec, work: &Path) -> anyhow::Result<HandRun> {
        let mut r = HandRun::default();
        let tree = work.join("tree");
        let ctx = work.join("context");
        let jwks = work.join("jwks");
        std::fs::create_dir_all(&ctx)?;
        std::fs::create_dir_all(&jwks)?;
        std::fs::write(jwks.join("jwks.json"), r#"{"keys":[]}"#)?;
        let world_readable = |p: &Path, mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        };
        world_readable(work, 0o755)?;
        world_readable(&jwks, 0o755)?;
        world_readable(&jwks.join("jwks.json"), 0o644)?;

        let all = Instant::now();
        let t = Instant::now();
        let rendered = bmm_spec::render(spec);
        bmm_spec::write_tree(&rendered, &tree)?;
        // What a script does once per tree: `ln -s $TOOLCHAIN/node_modules node_modules`.
        std::os::unix::fs::symlink(
            std::fs::canonicalize(self.toolchain.join("node_modules"))?,
            tree.join("node_modules"),
        )?;
        r.render_ms = ms(t.elapsed());

        let t = Instant::now();
        run(&self.tsc(), &["--noEmit", "--pretty", "false", "-p", "tsconfig.json"], &tree).await?;
        r.tsc_ms = ms(t.elapsed());

        let t = Instant::now();
        let esbuild = self.toolchain.join("node_modules/esbuild/bin/esbuild");
        let bundle = run(
            &esbuild,
            &[
                bmm_spec::render::ENTRY,
                "--bundle",
                "--platform=node",
                "--target=node20",
                "--format=esm",
                "--preserve-symlinks",
                "--legal-comments=none",
                "--charset=utf8",
                "--log-level=error",
                "--banner:js=import { createRequire as __bmmCreateRequire } from 'node:module'; \
                 const require = __bmmCreateRequire(import.meta.url);",
            ],
            &tree,
        )
        .await?;
        std::fs::write(ctx.join("server.mjs"), &bundle)?;
        r.esbuild_ms = ms(t.elapsed());
        r.bundle_digest = bmm_core::digest::sha256(&bundle);

        let tag = format!("bmm-bench-baseline:{}", uuid::Uuid::new_v4().simple());
        let name = format!("bmm-bench-baseline-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dockerfile =
            format!("FROM {}\nCOPY server.mjs /app/server.mjs\nUSER 10001:10001\nWORKDIR /app\n", self.runtime_image);
        std::fs::write(ctx.join("Dockerfile"), dockerfile)?;
        let result = async {
            let t = Instant::now();
            let label = format!("bmm.bench={}", self.run_label);
            // --no-cache: every bundle of a run is new, so a script would meet no cache either.
            docker(&["build", "-q", "--no-cache", "--label", &label, "-t", &tag, &ctx.display().to_string()]).await?;
            r.docker_build_ms = ms(t.elapsed());

            let t = Instant::now();
            let jwks_mount = format!("{}:/etc/bmm/jwks:ro", jwks.display());
            docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--label",
                &label,
                "-p",
                "127.0.0.1::8080",
                "--read-only",
                "--tmpfs",
                "/tmp:rw,noexec,nosuid,nodev,size=64m",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges:true",
                "--memory",
                "256m",
                "--memory-swap",
                "256m",
                "--cpus",
                "0.5",
                "--pids-limit",
                "256",
                "--user",
                "10001:10001",
                "-w",
                "/app",
                "-e",
                "PORT=8080",
                "-e",
                "NODE_ENV=production",
                "-e",
                "BMM_SERVER_URL=http://127.0.0.1:9/s/bench/mcp",
                "-e",
                "BMM_ISSUER=http://127.0.0.1:9",
                "-e",
                "BMM_JWKS_FILE=/etc/bmm/jwks/jwks.json",
                "-v",
                &jwks_mount,
                &tag,
                "/app/server.mjs",
            ])
            .await?;
            let port = docker(&["port", &name, "8080/tcp"]).await?;
            r.docker_run_ms = ms(t.elapsed());
            let addr = port.lines().find(|l| l.starts_with("127.0.0.1:")).unwrap_or(port.as_str()).to_owned();

            let t = Instant::now();
            poll_healthy(&format!("http://{addr}/healthz"), self.poll, Duration::from_secs(60)).await?;
            r.healthz_ms = ms(t.elapsed());
            anyhow::Ok(())
        }
        .await;
        r.total_ms = ms(all.elapsed());
        let _ = docker(&["rm", "-f", "-v", &name]).await;
        let _ = docker(&["rmi", &tag]).await;
        result.map(|()| r)
    }
}
