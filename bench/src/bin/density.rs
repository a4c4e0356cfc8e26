//! Density: resident memory of idle deployed servers (their containers'
//! cgroup memory), and how many fit in 1 GiB.
//!
//! Builds a few servers (distinct specs), lets them sit idle, then reads each
//! container's memory cgroup (what the kernel charges it) and its node
//! process's RSS. The baseline in the same run is the per-container limit the
//! platform reserves (`BMM_CONTAINER_MEMORY_MIB`, default 256 MiB).

use std::time::Duration;

use bmm_bench::docker::{container_memory, stats_mem};
use bmm_bench::stats::{Summary, fmt};
use bmm_bench::table::Table;
use bmm_bench::{platform, specs, sys};
use bmm_e2e::{Gql, PlatformOptions};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Density: memory of idle deployed servers")]
struct Args {
    /// Servers to deploy and measure.
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// Idle time before measuring, in seconds.
    #[arg(long, default_value_t = 15)]
    idle: u64,
    /// Samples per container (one a second); the median is reported.
    #[arg(long, default_value_t = 5)]
    samples: usize,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!("machine: {}", sys::machine());
    let platform = platform::start(PlatformOptions::default()).await;
    let gql = Gql::new(platform.url(), &platform.api_key("bench-density@example.test").await);
    let offset = specs::run_offset();
    let mut servers = Vec::new();
    let result = async {
        let mut live = Vec::new();
        for i in 0..args.servers {
            let preview = platform::preview(&gql, &specs::description(offset, i)).await?;
            let created = platform::create_from_preview(&gql, &preview, &format!("density {i}")).await?;
            servers.push(created.server_id.clone());
            let status = gql.wait_build(&created.build_id, Duration::from_secs(300)).await;
            if status != "SUCCEEDED" {
                anyhow::bail!("build ended {status}\n{}", platform.logs());
            }
            live.push(platform::live_server(&gql, &created.server_id).await?);
        }
        eprintln!("{} servers live; idle for {} s", live.len(), args.idle);
        tokio::time::sleep(Duration::from_secs(args.idle)).await;
        let mut rows = Vec::new();
        for l in &live {
            let mut usage = Vec::new();
            let mut anon = Vec::new();
            let mut shown = Vec::new();
            let mut rss = Vec::new();
            let mut cache = Vec::new();
            let mut rss_anon = Vec::new();
            for _ in 0..args.samples {
                let m = container_memory(&l.container).await?;
                usage.push(m.cgroup_usage as f64);
                anon.push(m.anon as f64);
                shown.push(m.docker_stats as f64);
                rss.push(m.main_rss as f64);
                cache.push(m.cache as f64);
                rss_anon.push(m.main_rss_anon as f64);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let med = |v: &[f64]| Summary::of(v).p50;
            rows.push((
                l.container.clone(),
                l.tools.len(),
                med(&usage),
                med(&anon),
                med(&cache),
                med(&shown),
                med(&rss),
                med(&rss_anon),
                stats_mem(&l.container).await,
            ));
        }
        anyhow::Ok(rows)
    }
    .await;
    platform::cleanup(&servers).await;
    let rows = result?;

    let limit_mib: f64 = std::env::var("BMM_CONTAINER_MEMORY_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256.0);
    let mib = |b: f64| fmt(sys::mib(b));
    let mut t = Table::new(
        &format!(
            "Idle deployed servers after {} s idle, MiB (median of {} samples; {})",
            args.idle,
            args.samples,
            sys::machine()
        ),
        &[
            "container",
            "tools",
            "cgroup usage",
            "anon (rss)",
            "page cache",
            "docker stats",
            "node VmRSS",
            "node RssAnon",
            "docker stats (CLI)",
        ],
    );
    for (name, tools, usage, anon, cache, shown, rss, rss_anon, cli) in &rows {
        t.row(vec![
            name.clone(),
            tools.to_string(),
            mib(*usage),
            mib(*anon),
            mib(*cache),
            mib(*shown),
            mib(*rss),
            mib(*rss_anon),
            cli.clone(),
        ]);
    }
    t.print();

    let shown = Summary::of(&rows.iter().map(|r| r.5).collect::<Vec<_>>()).p50;
    let usage = Summary::of(&rows.iter().map(|r| r.2).collect::<Vec<_>>()).p50;
    let rss = Summary::of(&rows.iter().map(|r| r.6).collect::<Vec<_>>()).p50;
    let rss_anon = Summary::of(&rows.iter().map(|r| r.7).collect::<Vec<_>>()).p50;
    let mut d = Table::new("How many idle servers fit in 1 GiB", &["measure", "per server, MiB", "servers per GiB"]);
    d.row(vec!["docker stats (usage − inactive file)".into(), mib(shown), format!("{:.0}", (GIB / shown).floor())]);
    d.row(vec!["cgroup usage (page cache included)".into(), mib(usage), format!("{:.0}", (GIB / usage).floor())]);
    d.row(vec!["node RssAnon (private memory only)".into(), mib(rss_anon), format!("{:.0}", (GIB / rss_anon).floor())]);
    d.row(vec![
        "node VmRSS (counts the shared node binary in each)".into(),
        mib(rss),
        format!("{:.0}", (GIB / rss).floor()),
    ]);
    d.row(vec![
        "baseline: the memory limit the platform reserves".into(),
        fmt(limit_mib),
        format!("{:.0}", (1024.0 / limit_mib).floor()),
    ]);
    d.print();
    Ok(())
}
