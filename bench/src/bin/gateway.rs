//! Gateway overhead: MCP `tools/call` through `{public}/s/{slug}/mcp` against
//! the same call straight to the container's published port, with the same
//! access token. Sequential latency (interleaved, so drift falls on both) and
//! throughput under concurrent load, both bounded in count and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bmm_bench::mcp::Mcp;
use bmm_bench::stats::{Summary, fmt, ratio};
use bmm_bench::table::Table;
use bmm_bench::{platform, sys};
use bmm_e2e::{Gql, PlatformOptions};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Gateway overhead on MCP tools/call")]
struct Args {
    /// Sequential calls per path (after the warm-up).
    #[arg(long, default_value_t = 500)]
    calls: usize,
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Concurrent callers in the load phase.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Calls per path in the load phase (it also stops at --load-seconds).
    #[arg(long, default_value_t = 4000)]
    load_calls: u64,
    #[arg(long, default_value_t = 15)]
    load_seconds: u64,
}

async fn timed(m: &Mcp, id: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    m.call_tool(id, "echo", json!({ "text": "hello" })).await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// One load phase: calls done, their latencies, errors, and how long it took.
struct Load {
    latencies: Vec<f64>,
    errors: u64,
    secs: f64,
}

impl Load {
    /// (calls/s, latencies, errors) over both phases.
    fn merge(self, other: Load) -> (f64, Vec<f64>, u64) {
        let mut latencies = self.latencies;
        latencies.extend(other.latencies);
        let rps = latencies.len() as f64 / (self.secs + other.secs);
        (rps, latencies, self.errors + other.errors)
    }
}

/// `concurrency` callers share `calls` calls, stopping at `limit`.
async fn load(m: &Mcp, concurrency: usize, calls: u64, limit: Duration) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let m = m.clone();
            let next = next.clone();
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= calls || started.elapsed() > limit {
                        return lat;
                    }
                    match timed(&m, id + 1).await {
                        Ok(ms) => lat.push(ms),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    Load { latencies: all, errors: errors.load(Ordering::Relaxed), secs: started.elapsed().as_secs_f64() }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("machine: {}", sys::machine());
    let platform = platform::start(PlatformOptions::default()).await;
    let gql = Gql::new(platform.url(), &platform.api_key("bench-gateway@example.test").await);
    let (server, build) = gql.create_server("An echo tool.", "gateway bench").await;
    let server_id = server["id"].as_str().unwrap_or_default().to_owned();
    let status = gql.wait_build(&build, Duration::from_secs(300)).await;
    if status != "SUCCEEDED" {
        platform::cleanup(std::slice::from_ref(&server_id)).await;
        anyhow::bail!("build ended {status}\n{}", platform.logs());
    }
    let live = platform::live_server(&gql, &server_id).await?;
    let token = platform::mint_token(&platform, &gql, &live.url).await?;
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(256).build()?;
    let via_gateway = Mcp::new(&live.url, &token, http.clone());
    let direct = Mcp::new(&format!("http://{}:{}/mcp", live.host, live.port), &token, http);
    let result = async {
        for (name, m) in [("gateway", &via_gateway), ("direct", &direct)] {
            m.initialize().await.map_err(|e| anyhow::anyhow!("{name} initialize: {e}"))?;
            m.call_tool(1, "echo", json!({ "text": "hello" })).await.map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
        for i in 0..args.warmup as u64 {
            timed(&via_gateway, i).await?;
            timed(&direct, i).await?;
        }
        let (mut g, mut d) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..args.calls as u64 {
            if Instant::now() > deadline {
                break;
            }
            // Alternate which goes first so neither always follows the other.
            if i % 2 == 0 {
                g.push(timed(&via_gateway, i).await?);
                d.push(timed(&direct, i).await?);
            } else {
                d.push(timed(&direct, i).await?);
                g.push(timed(&via_gateway, i).await?);
            }
        }
        // Two halves in the order direct, gateway, gateway, direct, so neither
        // path always runs on a machine the other has just warmed or loaded.
        let limit = Duration::from_secs(args.load_seconds).div_f64(2.0);
        let half = args.load_calls.div_ceil(2);
        let d1 = load(&direct, args.concurrency, half, limit).await;
        let g1 = load(&via_gateway, args.concurrency, half, limit).await;
        let g2 = load(&via_gateway, args.concurrency, half, limit).await;
        let d2 = load(&direct, args.concurrency, half, limit).await;
        let (d_rps, d_lat, d_err) = d1.merge(d2);
        let (g_rps, g_lat, g_err) = g1.merge(g2);
        anyhow::Ok((g, d, (g_rps, g_lat, g_err), (d_rps, d_lat, d_err)))
    }
    .await;
    platform::cleanup(std::slice::from_ref(&server_id)).await;
    let (g, d, (g_rps, g_lat, g_err), (d_rps, d_lat, d_err)) = result?;

    let (gs, ds) = (Summary::of(&g), Summary::of(&d));
    let mut t = Table::new(
        &format!("Gateway: tools/call echo, {} sequential calls per path ({})", gs.n, sys::machine()),
        &["figure", "direct", "via gateway", "added", "gateway/direct"],
    );
    for (name, a, b) in [("p50, ms", ds.p50, gs.p50), ("p99, ms", ds.p99, gs.p99), ("mean, ms", ds.mean, gs.mean)] {
        t.row(vec![name.into(), fmt(a), fmt(b), fmt(b - a), ratio(b, a)]);
    }
    t.print();
    let (gl, dl) = (Summary::of(&g_lat), Summary::of(&d_lat));
    let mut l = Table::new(
        &format!(
            "Under load: {} concurrent callers, at most {} calls or {} s per path (two halves, ABBA order)",
            args.concurrency, args.load_calls, args.load_seconds
        ),
        &["figure", "direct", "via gateway", "gateway/direct"],
    );
    l.row(vec!["calls/s".into(), fmt(d_rps), fmt(g_rps), ratio(g_rps, d_rps)]);
    l.row(vec!["calls done / errors".into(), format!("{} / {d_err}", dl.n), format!("{} / {g_err}", gl.n), "".into()]);
    l.row(vec!["p50, ms".into(), fmt(dl.p50), fmt(gl.p50), ratio(gl.p50, dl.p50)]);
    l.row(vec!["p99, ms".into(), fmt(dl.p99), fmt(gl.p99), ratio(gl.p99, dl.p99)]);
    l.print();
    Ok(())
}
