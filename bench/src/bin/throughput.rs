//! Throughput: N builds (default 20) started at once. All must succeed; total
//! time and the per-build latency distribution, against one build alone
//! measured first in the same run.

use std::collections::BTreeMap;
use std::time::Duration;

use bmm_bench::platform::{self, Created, ms_between};
use bmm_bench::stats::{Summary, fmt, ratio};
use bmm_bench::table::Table;
use bmm_bench::{specs, sys, ws};
use bmm_e2e::{Gql, PlatformOptions};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Throughput: many builds started at once")]
struct Args {
    /// Builds started at once.
    #[arg(long, default_value_t = 20)]
    builds: usize,
    /// Longest wait for all builds, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

struct Outcome {
    created: Created,
    kind: String,
    latency_ms: f64,
    end: chrono::DateTime<chrono::Utc>,
    steps: BTreeMap<String, f64>,
    error: Option<String>,
}

async fn follow(gql: &Gql, watch: &Gql, base: &str, created: Created, timeout: Duration) -> Outcome {
    let result = tokio::time::timeout(timeout, ws::follow_build(base, &watch.key, &created.build_id)).await;
    let (kind, end) = match result {
        Ok(Ok(a)) => match a.last() {
            Some(last) => (last.kind.clone(), last.arrived),
            None => ("NO EVENTS".into(), chrono::Utc::now()),
        },
        Ok(Err(e)) => (format!("subscription failed: {e}"), chrono::Utc::now()),
        Err(_) => ("TIMED OUT".into(), chrono::Utc::now()),
    };
    let info = platform::build_info(gql, &created.build_id).await;
    Outcome {
        latency_ms: ms_between(created.sent, end),
        kind,
        end,
        steps: info.steps.iter().map(|s| (s.name.clone(), s.ms())).collect(),
        error: info.error,
        created,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("machine: {}", sys::machine());
    let platform = platform::start(PlatformOptions::default()).await;
    // Two keys so the per-key rate limit (burst 120) never throttles the run itself.
    let gql = Gql::new(platform.url(), &platform.api_key("bench-throughput@example.test").await);
    let watch = Gql::new(platform.url(), &platform.api_key("bench-throughput@example.test").await);
    let base = platform.url().to_owned();
    let offset = specs::run_offset();
    let timeout = Duration::from_secs(args.timeout);

    // The baseline: one build alone (after an unmeasured warm-up build).
    let mut solo = Vec::new();
    for i in 0..2 {
        let preview = platform::preview(&gql, &specs::description(offset, i)).await?;
        let created = platform::create_from_preview(&gql, &preview, &format!("solo {i}")).await?;
        let o = follow(&gql, &watch, &base, created, timeout).await;
        eprintln!("solo build {i}: {} in {:.0} ms", o.kind, o.latency_ms);
        solo.push(o);
    }
    let alone = solo.last().expect("solo build");

    let mut previews = Vec::new();
    for i in 0..args.builds {
        previews.push(platform::preview(&gql, &specs::description(offset, i + 2)).await?);
    }
    eprintln!("starting {} builds at once", args.builds);
    let creates = previews.iter().enumerate().map(|(i, p)| {
        let gql = gql.clone();
        let p = p.clone();
        async move { platform::create_from_preview(&gql, &p, &format!("burst {i}")).await }
    });
    let created: Vec<Created> = futures::future::join_all(creates).await.into_iter().collect::<anyhow::Result<_>>()?;
    let first_sent = created.iter().map(|c| c.sent).min().expect("builds");
    let outcomes: Vec<Outcome> =
        futures::future::join_all(created.into_iter().map(|c| follow(&gql, &watch, &base, c, timeout))).await;
    let last_end = outcomes.iter().map(|o| o.end).max().expect("builds");
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == "BUILD_SUCCEEDED").collect();
    let lat: Vec<f64> = ok.iter().map(|o| o.latency_ms).collect();
    let s = Summary::of(&lat);
    let total = ms_between(first_sent, last_end);

    let mut t = Table::new(
        &format!("Throughput: {} builds started at once ({})", args.builds, sys::machine()),
        &["figure", "value"],
    );
    t.row(vec!["succeeded".into(), format!("{} / {}", ok.len(), outcomes.len())]);
    t.row(vec!["total (first createServer → last BUILD_SUCCEEDED), s".into(), fmt(total / 1000.0)]);
    t.row(vec!["build latency p50, s".into(), fmt(s.p50 / 1000.0)]);
    t.row(vec!["build latency p95, s".into(), fmt(s.p95 / 1000.0)]);
    t.row(vec!["build latency max, s".into(), fmt(s.max / 1000.0)]);
    t.row(vec!["one build alone (same run), s".into(), fmt(alone.latency_ms / 1000.0)]);
    t.row(vec![
        "total / (builds × alone): 1.00 = no better than one at a time".into(),
        ratio(total, args.builds as f64 * alone.latency_ms),
    ]);
    t.row(vec!["p95 / alone".into(), ratio(s.p95, alone.latency_ms)]);
    t.row(vec!["builds per minute".into(), fmt(ok.len() as f64 / (total / 60_000.0))]);
    t.print();

    let mut st =
        Table::new("Step times under load vs alone, ms", &["step", "alone", "p50 at once", "p95 at once", "p50 ratio"]);
    for step in ["generate", "check", "bundle", "deploy", "smoke", "cutover"] {
        let v: Vec<f64> = ok.iter().filter_map(|o| o.steps.get(step).copied()).collect();
        let a = alone.steps.get(step).copied().unwrap_or(f64::NAN);
        let sv = Summary::of(&v);
        st.row(vec![step.into(), fmt(a), fmt(sv.p50), fmt(sv.p95), ratio(sv.p50, a)]);
    }
    st.print();

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind != "BUILD_SUCCEEDED").collect();
    for f in &failed {
        println!("FAILED build {}: {} {:?}", f.created.build_id, f.kind, f.error);
    }
    if !failed.is_empty() {
        eprintln!("{}", platform.logs());
    }
    let servers: Vec<String> = solo.iter().chain(&outcomes).map(|o| o.created.server_id.clone()).collect();
    platform::cleanup(&servers).await;
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{} of {} builds failed", failed.len(), outcomes.len()) }
}
