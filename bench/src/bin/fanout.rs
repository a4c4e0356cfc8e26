//! Subscription fan-out: N WebSocket subscribers (default 1,000) on one build.
//! Delay from each event's commit (`at`) to its arrival at each client, and
//! the API process's resident memory per subscriber.
//!
//! The platform runs as separate `bmm api` and `bmm worker` processes: the
//! worker is stopped while the subscribers connect (the build waits queued in
//! Temporal), then started, so every measured event is a live one. The
//! baseline, in the same run, is one subscriber on a build of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bmm_bench::stats::{Summary, fmt, ratio};
use bmm_bench::table::Table;
use bmm_bench::ws::{Arrival, Subscriber};
use bmm_bench::{platform, specs, sys};
use bmm_e2e::{Gql, PlatformOptions};
use chrono::Utc;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Subscription fan-out: many graphql-transport-ws subscribers on one build")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Subscribers per API key (the API rate-limits each key: burst 120).
    #[arg(long, default_value_t = 100)]
    per_key: usize,
    /// Connections opened at the same time while connecting.
    #[arg(long, default_value_t = 50)]
    connect_concurrency: usize,
    /// Longest wait for the build, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Stop the worker process this program started (by its own handle).
async fn stop_worker(platform: &mut bmm_e2e::Platform) {
    for p in platform.processes.iter_mut().filter(|p| p.name.starts_with("worker")) {
        let _ = p.child.kill().await;
    }
}

fn api_pid(platform: &bmm_e2e::Platform) -> u32 {
    platform.processes.iter().find(|p| p.name.starts_with("api")).and_then(|p| p.child.id()).expect("api process")
}

/// Live events only: those committed after every subscriber was in place.
fn delays(runs: &[Vec<Arrival>], since: chrono::DateTime<Utc>) -> Vec<f64> {
    runs.iter().flatten().filter(|a| a.at > since).map(Arrival::delay_ms).collect()
}

/// One measured build: its subscribers' arrivals and what it cost the API.
struct Round {
    runs: Vec<Vec<Arrival>>,
    ready: chrono::DateTime<Utc>,
    connect_ms: Vec<f64>,
    connect_all_ms: f64,
    connect_errors: Vec<String>,
    collect_errors: Vec<String>,
    rss_before: u64,
    rss_after: u64,
    rss_end: u64,
    server_id: String,
}

/// Queue a build with the worker stopped, connect `n` subscribers, start a
/// worker and collect every subscriber's events until the build ends.
async fn round(
    platform: &mut bmm_e2e::Platform,
    gql: &Gql,
    keys: &[String],
    n: usize,
    args: &Args,
    description: &str,
    name: &str,
) -> anyhow::Result<Round> {
    let base = platform.url().to_owned();
    let timeout = Duration::from_secs(args.timeout);
    stop_worker(platform).await;
    let preview = platform::preview(gql, description).await?;
    let build = platform::create_from_preview(gql, &preview, name).await?;
    // Warm the API's code paths with one subscriber, then measure.
    {
        let mut s = Subscriber::connect(&base, &keys[0]).await?;
        s.subscribe(&build.build_id, 0).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = api_pid(platform);
    let rss_before = sys::rss_bytes(pid).unwrap_or(0);

    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let connects = (0..n).map(|i| {
        let gate = gate.clone();
        let base = base.clone();
        let key = keys[(i / args.per_key) % keys.len()].clone();
        let build_id = build.build_id.clone();
        tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let t = Instant::now();
            let mut s = Subscriber::connect(&base, &key).await?;
            s.subscribe(&build_id, 0).await?;
            anyhow::Ok((s, t.elapsed().as_secs_f64() * 1000.0))
        })
    });
    let mut subs = Vec::new();
    let mut connect_ms = Vec::new();
    let mut connect_errors = Vec::new();
    for r in futures::future::join_all(connects).await {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((s, ms)) => {
                subs.push(s);
                connect_ms.push(ms);
            }
            Err(e) => connect_errors.push(e.to_string()),
        }
    }
    let connect_all_ms = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = sys::rss_bytes(pid).unwrap_or(0);
    let ready = Utc::now();
    eprintln!(
        "{name}: {} subscriber(s) connected in {connect_all_ms:.0} ms ({} failed)",
        subs.len(),
        connect_errors.len()
    );
    if let Some(e) = connect_errors.first() {
        eprintln!("first connect error: {e}");
    }

    let collectors: Vec<_> = subs.into_iter().map(|s| tokio::spawn(s.collect())).collect();
    platform.spawn_worker(&format!("worker-{}", uuid::Uuid::new_v4().simple()));
    let results = tokio::time::timeout(timeout, futures::future::join_all(collectors))
        .await
        .map_err(|_| anyhow::anyhow!("the build did not end within {timeout:?}\n{}", platform.logs()))?;
    let rss_end = sys::rss_bytes(pid).unwrap_or(0);
    let mut runs = Vec::new();
    let mut collect_errors = Vec::new();
    for r in results {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(a) => runs.push(a),
            Err(e) => collect_errors.push(e.to_string()),
        }
    }
    Ok(Round {
        runs,
        ready,
        connect_ms,
        connect_all_ms,
        connect_errors,
        collect_errors,
        rss_before,
        rss_after,
        rss_end,
        server_id: build.server_id,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = sys::raise_nofile(args.subscribers as u64 * 2 + 4096);
    eprintln!("machine: {}; open-file limit {nofile}", sys::machine());
    if (nofile as usize) < args.subscribers * 2 + 256 {
        anyhow::bail!("open-file limit {nofile} is too low for {} subscribers: raise it (ulimit -n)", args.subscribers);
    }
    let mut platform = platform::start(PlatformOptions { apis: 1, workers: 1, ..Default::default() }).await;
    let email = "bench-fanout@example.test";
    let gql = Gql::new(platform.url(), &platform.api_key(email).await);
    let offset = specs::run_offset();
    let mut keys = Vec::new();
    for _ in 0..args.subscribers.div_ceil(args.per_key) {
        keys.push(platform.api_key(email).await);
    }

    let one = round(&mut platform, &gql, &keys, 1, &args, &specs::description(offset, 0), "fanout baseline").await?;
    let many =
        round(&mut platform, &gql, &keys, args.subscribers, &args, &specs::description(offset, 1), "fanout").await?;

    let b = Summary::of(&delays(&one.runs, one.ready));
    let runs = &many.runs;
    let events_per_client = runs.iter().map(Vec::len).max().unwrap_or(0);
    let gapless = runs.iter().filter(|r| r.iter().enumerate().all(|(i, a)| a.seq == i as i64 + 1)).count();
    let s = Summary::of(&delays(runs, many.ready));
    // Per event: the first client to get it (the server's own delay, least
    // client queueing) and the spread from first to last client.
    let mut spread = Vec::new();
    let mut first = Vec::new();
    for seq in 1..=events_per_client as i64 {
        let arr: Vec<_> =
            runs.iter().flatten().filter(|a| a.seq == seq && a.at > many.ready).map(|a| a.arrived).collect();
        if let (Some(lo), Some(hi)) = (arr.iter().min(), arr.iter().max()) {
            spread.push(platform::ms_between(*lo, *hi));
            if let Some(at) = runs.iter().flatten().find(|a| a.seq == seq).map(|a| a.at) {
                first.push(platform::ms_between(at, *lo));
            }
        }
    }
    let sp = Summary::of(&spread);
    let fs = Summary::of(&first);

    let n = args.subscribers;
    let mut t = Table::new(
        &format!("Fan-out: {n} subscribers on one build ({})", sys::machine()),
        &["figure", "1 subscriber (baseline)", &format!("{n} subscribers"), "ratio"],
    );
    let counts = |r: &Round| {
        let c = r.runs.iter().filter(|x| x.last().is_some_and(|a| a.kind.starts_with("BUILD_"))).count();
        format!("{} / {c}", r.runs.len() + r.collect_errors.len())
    };
    t.row(vec!["subscribed / completed".into(), counts(&one), counts(&many), "".into()]);
    t.row(vec![
        "events per client; clients with every seq in order".into(),
        one.runs.first().map_or(0, Vec::len).to_string(),
        format!("{events_per_client}; {gapless}"),
        "".into(),
    ]);
    t.row(vec!["live deliveries measured".into(), b.n.to_string(), s.n.to_string(), "".into()]);
    t.row(vec!["commit → client delay p50, ms".into(), fmt(b.p50), fmt(s.p50), ratio(s.p50, b.p50)]);
    t.row(vec!["commit → client delay p99, ms".into(), fmt(b.p99), fmt(s.p99), ratio(s.p99, b.p99)]);
    t.row(vec!["commit → client delay max, ms".into(), fmt(b.max), fmt(s.max), ratio(s.max, b.max)]);
    t.row(vec![
        "commit → first client of each event p50 / max, ms".into(),
        format!("{} / {}", fmt(b.p50), fmt(b.max)),
        format!("{} / {}", fmt(fs.p50), fmt(fs.max)),
        ratio(fs.p50, b.p50),
    ]);
    t.row(vec![
        "spread of one event across clients p50 / max, ms".into(),
        "".into(),
        format!("{} / {}", fmt(sp.p50), fmt(sp.max)),
        "".into(),
    ]);
    t.print();

    let cs = Summary::of(&many.connect_ms);
    let mut m = Table::new("API process memory and connection set-up", &["figure", "value"]);
    m.row(vec!["API RSS before subscribers, MiB".into(), fmt(sys::mib(many.rss_before as f64))]);
    m.row(vec![format!("API RSS with {n} subscribers, MiB"), fmt(sys::mib(many.rss_after as f64))]);
    m.row(vec!["API RSS after the build ended, MiB".into(), fmt(sys::mib(many.rss_end as f64))]);
    let per = (many.rss_after as f64 - many.rss_before as f64) / n.max(1) as f64;
    m.row(vec!["RSS per subscriber, KiB".into(), fmt(per / 1024.0)]);
    m.row(vec![
        format!("connect + init + subscribe p50 / p99, ms (concurrency {})", args.connect_concurrency),
        format!("{} / {}", fmt(cs.p50), fmt(cs.p99)),
    ]);
    m.row(vec!["all subscribers connected in, ms".into(), fmt(many.connect_all_ms)]);
    m.row(vec![
        "connect failures / collect failures".into(),
        format!("{} / {}", many.connect_errors.len(), many.collect_errors.len()),
    ]);
    m.print();
    for e in many.collect_errors.iter().take(3) {
        println!("collect error: {e}");
    }
    platform::cleanup(&[one.server_id.clone(), many.server_id.clone()]).await;
    Ok(())
}
