//! Recovery: N live servers on a private Docker daemon (its own socket, data
//! and exec roots, bridge; never the shared daemon), `kill -9` of that daemon,
//! a pause, and a restart; reports the time from Docker answering again to
//! every server answering `tools/call` through the gateway, and (second
//! phase) from `docker rm -f` of every server's container to the same.
//! Repeated `--rounds` times.

use std::time::{Duration, Instant};

use bmm_bench::mcp::Mcp;
use bmm_bench::stats::{Summary, fmt};
use bmm_bench::table::Table;
use bmm_bench::{platform, sys};
use bmm_e2e::{Gql, PlatformOptions, PrivateDockerd};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Time from Docker coming back to every server answering again")]
struct Args {
    #[arg(long, default_value_t = 3)]
    servers: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How long the daemon stays dead.
    #[arg(long, default_value_t = 3)]
    down_seconds: u64,
    /// The reconciler's interval (`BMM_RECONCILE_INTERVAL_MS`).
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

/// Until every server answers; the elapsed milliseconds.
async fn all_answer(servers: &[Mcp], within: Duration) -> anyhow::Result<f64> {
    let t = Instant::now();
    loop {
        let mut ok = true;
        for (i, m) in servers.iter().enumerate() {
            let answered = async {
                m.initialize().await?;
                m.call_tool(i as u64 + 2, "echo", json!({ "text": "back?" })).await
            }
            .await;
            ok &= answered.is_ok();
        }
        if ok {
            return Ok(t.elapsed().as_secs_f64() * 1000.0);
        }
        if t.elapsed() > within {
            anyhow::bail!("not every server answered within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut dockerd =
        PrivateDockerd::start().await.ok_or_else(|| anyhow::anyhow!("no private dockerd (needs root)"))?;
    let image = std::env::var("BMM_RUNTIME_IMAGE").unwrap_or_else(|_| "bmm-runtime:node20".to_owned());
    dockerd.load_image(&image).await.map_err(|e| anyhow::anyhow!("loading {image}: {e}"))?;
    let p = platform::start(PlatformOptions {
        env: vec![
            ("BMM_DOCKER_HOST".into(), dockerd.host.clone()),
            ("BMM_RECONCILE_INTERVAL_MS".into(), args.interval_ms.to_string()),
        ],
        ..Default::default()
    })
    .await;
    let key = p.api_key("recovery-bench@example.test").await;
    let gql = Gql::new(p.url(), &key);
    let mut builds = Vec::new();
    for i in 0..args.servers {
        builds.push(gql.create_server("An echo tool.", &format!("recovery {i}")).await);
    }
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build()?;
    let mut servers = Vec::new();
    for (server, build) in &builds {
        let status = gql.wait_build(build, Duration::from_secs(300)).await;
        anyhow::ensure!(status == "SUCCEEDED", "build ended {status}\n{}", p.logs());
        let url = server["url"].as_str().unwrap_or_default().to_owned();
        let token = platform::mint_token(&p, &gql, &url).await?;
        servers.push(Mcp::new(&url, &token, http.clone()));
    }
    all_answer(&servers, Duration::from_secs(30)).await?;

    let (mut restart, mut removed) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        dockerd.kill9().await;
        tokio::time::sleep(Duration::from_secs(args.down_seconds)).await;
        let t = Instant::now();
        anyhow::ensure!(dockerd.restart().await, "dockerd did not come back:\n{}", dockerd.log_tail(20));
        let daemon_ms = t.elapsed().as_secs_f64() * 1000.0;
        let ms = all_answer(&servers, Duration::from_secs(120)).await?;
        eprintln!("round {round}: dockerd answered after {daemon_ms:.0} ms; every server {ms:.0} ms later");
        restart.push(ms);

        let ids =
            dockerd.docker(&["ps", "-aq", "--filter", "label=bmm.managed=true"]).await.map_err(anyhow::Error::msg)?;
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.lines());
        let t = Instant::now();
        dockerd.docker(&rm).await.map_err(anyhow::Error::msg)?;
        let rm_ms = t.elapsed().as_secs_f64() * 1000.0;
        let ms = all_answer(&servers, Duration::from_secs(120)).await?;
        eprintln!("round {round}: docker rm -f took {rm_ms:.0} ms; every server answered {ms:.0} ms later");
        removed.push(ms);
    }

    let mut t = Table::new(
        &format!(
            "Recovery of {} servers, reconcile interval {} ms, {} rounds ({}; load {})",
            args.servers,
            args.interval_ms,
            args.rounds,
            sys::machine(),
            sys::loadavg()
        ),
        &["fault", "median ms", "p95 ms", "max ms"],
    );
    for (name, samples) in
        [("dockerd kill -9 → restarted → all answer", &restart), ("docker rm -f → all answer", &removed)]
    {
        let s = Summary::of(samples);
        t.row(vec![name.to_owned(), fmt(s.p50), fmt(s.p95), fmt(s.max)]);
    }
    t.print();
    println!("binary: {}", bmm_e2e::platform::bmm_bin().display());
    drop(p);
    drop(dockerd);
    Ok(())
}
