//! Build latency: `createServer` → smoke-tested live server, against the same
//! spec pushed through the same steps by hand (a shell script's pipeline).
//!
//! Offline generator (no model time). Builds and hand-runs alternate in order
//! (even rounds hand-run first, odd rounds pipeline first) so drift on a shared
//! machine falls on both. Each round uses a spec no other round uses, so
//! neither side meets an image cached by the other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bmm_bench::baseline::{HandPipeline, HandRun};
use bmm_bench::platform::{self, BuildInfo, ms_between};
use bmm_bench::stats::{Summary, fmt, ratio};
use bmm_bench::table::Table;
use bmm_bench::{docker, specs, sys, ws};
use bmm_e2e::{Gql, PlatformOptions};
use chrono::{DateTime, Utc};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Build latency: the platform's pipeline against the same steps run by hand")]
struct Args {
    /// Measured builds (each with its hand-run).
    #[arg(long, default_value_t = 10)]
    builds: usize,
    /// Unmeasured warm-up rounds first (worker, toolchain and page cache warm for both sides).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// How often the hand-run polls /healthz, in ms (the platform's deploy polls every 200 ms).
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Longest wait for one build, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Only the hand-run (no platform): to check the baseline on its own.
    #[arg(long)]
    hand_only: bool,
}

const STEPS: &[&str] = &[
    "generate",
    "check",
    "bundle",
    "deploy",
    "deploy: image",
    "deploy: create",
    "deploy: start",
    "deploy: health",
    SAME_WORK,
    "smoke",
    "cutover",
];
/// From check/bundle starting (side by side) to deploy's end: the work the hand-run does.
const SAME_WORK: &str = "check ∥ bundle → deploy (wall)";

/// Reads one phase's milliseconds out of a hand-run.
type HandPhase = fn(&HandRun) -> f64;

struct PipelineRun {
    /// createServer sent → BUILD_SUCCEEDED received.
    total_ms: f64,
    /// createServer sent → the build's first step started (API, Temporal start, task pick-up).
    queue_ms: f64,
    steps: BTreeMap<String, f64>,
    /// Build time not inside any step (Temporal scheduling between activities).
    between_ms: f64,
    /// Last step finished → the terminal event reached the client.
    tail_ms: f64,
    bundle_digest: String,
    /// The image existed before the build (a cache hit; would flatter the pipeline).
    image_reused: bool,
    /// The container runs the runtime image with the bundle mounted (no image of its own).
    mounted: bool,
    retries: i64,
}

async fn pipeline_run(
    gql: &Gql,
    base: &str,
    description: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<(PipelineRun, String)> {
    let preview = platform::preview(gql, description).await?;
    let created = platform::create_from_preview(gql, &preview, name).await?;
    let arrivals = tokio::time::timeout(timeout, ws::follow_build(base, &gql.key, &created.build_id))
        .await
        .map_err(|_| anyhow::anyhow!("build {} did not end within {timeout:?}", created.build_id))??;
    let last = arrivals.last().ok_or_else(|| anyhow::anyhow!("no events"))?;
    let info: BuildInfo = platform::build_info(gql, &created.build_id).await;
    if last.kind != "BUILD_SUCCEEDED" {
        anyhow::bail!("build {} ended {} ({:?})", created.build_id, last.kind, info.error);
    }
    let live = platform::live_server(gql, &created.server_id).await?;
    let image = docker::docker(&["inspect", "-f", "{{.Image}}", &live.container]).await?;
    let managed =
        docker::docker(&["image", "inspect", "-f", "{{index .Config.Labels \"bmm.managed\"}}", &image]).await?;
    let image_created: DateTime<Utc> =
        docker::docker(&["image", "inspect", "-f", "{{.Created}}", &image]).await?.parse()?;
    let mut steps = BTreeMap::new();
    let mut retries = 0;
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for s in &info.steps {
        retries += (s.attempts - 1).max(0);
        steps.insert(s.name.clone(), s.ms());
        if let (Some(a), Some(b)) = (s.started, s.finished) {
            spans.push((a, b));
        }
    }
    // check and bundle run side by side: the wall time from the first of them
    // starting to deploy's end is what the hand-run's tsc … healthz compares with.
    let at = |name: &str| info.steps.iter().find(|s| s.name == name);
    let started = [at("check"), at("bundle")].into_iter().flatten().filter_map(|s| s.started).min();
    let deployed = at("deploy").and_then(|s| s.finished);
    steps.insert(
        SAME_WORK.to_owned(),
        match (started, deployed) {
            (Some(a), Some(b)) => ms_between(a, b),
            _ => f64::NAN,
        },
    );
    for part in ["image", "create", "start", "health"] {
        let ms = info.deploy_timings[format!("{part}Ms")].as_f64().unwrap_or(f64::NAN);
        steps.insert(format!("deploy: {part}"), ms);
    }
    let first_start = info.steps.iter().filter_map(|s| s.started).min().unwrap_or(created.sent);
    let last_finish = info.steps.iter().filter_map(|s| s.finished).max().unwrap_or(last.at);
    let run = PipelineRun {
        total_ms: ms_between(created.sent, last.arrived),
        queue_ms: ms_between(created.sent, first_start),
        steps,
        between_ms: ms_between(first_start, last_finish) - covered_ms(&mut spans),
        tail_ms: ms_between(last_finish, last.arrived),
        bundle_digest: live.bundle_digests.first().cloned().unwrap_or_default(),
        mounted: managed.trim() != "true",
        image_reused: managed.trim() == "true" && image_created < created.sent,
        retries,
    };
    Ok((run, created.server_id))
}

/// Milliseconds covered by at least one of the intervals (steps may overlap).
fn covered_ms(spans: &mut [(DateTime<Utc>, DateTime<Utc>)]) -> f64 {
    spans.sort();
    let mut total = 0.0;
    let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for &(a, b) in spans.iter() {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += ms_between(ca, cb);
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = current {
        total += ms_between(ca, cb);
    }
    total
}

fn col(samples: &[f64]) -> Vec<String> {
    let s = Summary::of(samples);
    vec![fmt(s.p50), fmt(s.p95), fmt(s.min), fmt(s.max)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let toolchain = PathBuf::from(std::env::var("BMM_TOOLCHAIN_DIR").unwrap_or_else(|_| ".bmm/toolchain".into()));
    let runtime_image = std::env::var("BMM_RUNTIME_IMAGE").unwrap_or_else(|_| "bmm-runtime:node20".into());
    eprintln!("machine: {}", sys::machine());
    if args.hand_only {
        return hand_only(&args, toolchain, runtime_image).await;
    }
    let platform = platform::start(PlatformOptions::default()).await;
    let key = platform.api_key("bench-latency@example.test").await;
    let gql = Gql::new(platform.url(), &key);
    let run_label = uuid::Uuid::new_v4().simple().to_string();
    let hand = HandPipeline {
        toolchain,
        runtime_image,
        poll: Duration::from_millis(args.poll_ms),
        run_label: run_label.clone(),
    };
    let work = bmm_e2e::platform::tempfile_dir::Dir::new("bmm-bench-latency");
    let offset = specs::run_offset();
    let timeout = Duration::from_secs(args.timeout);

    let mut servers = Vec::new();
    let mut pipes: Vec<PipelineRun> = Vec::new();
    let mut hands: Vec<HandRun> = Vec::new();
    let mut failures = Vec::new();
    for round in 0..args.warmup + args.builds {
        let measured = round >= args.warmup;
        let description = specs::description(offset, round);
        let generated = bmm_generator::OfflineGenerator
            .generate_now(&bmm_generator::GenerateRequest { description: description.clone(), ..Default::default() })
            .map_err(|e| anyhow::anyhow!("offline generator: {e}"))?;
        let dir = work.path().join(format!("round-{round}"));
        let name = format!("latency {round}");
        let (p, h) = if round % 2 == 0 {
            let h = hand.run(&generated.spec, &dir).await;
            let p = pipeline_run(&gql, platform.url(), &description, &name, timeout).await;
            (p, h)
        } else {
            let p = pipeline_run(&gql, platform.url(), &description, &name, timeout).await;
            let h = hand.run(&generated.spec, &dir).await;
            (p, h)
        };
        match (p, h) {
            (Ok((p, server)), Ok(h)) => {
                servers.push(server);
                eprintln!(
                    "round {round}{}: pipeline {:.0} ms, by hand {:.0} ms{}{}",
                    if measured { "" } else { " (warm-up)" },
                    p.total_ms,
                    h.total_ms,
                    if p.bundle_digest == h.bundle_digest { "" } else { " [bundles differ!]" },
                    if p.image_reused { " [image reused]" } else { "" },
                );
                if measured {
                    pipes.push(p);
                    hands.push(h);
                }
            }
            (p, h) => {
                if let Ok((_, server)) = &p {
                    servers.push(server.clone());
                }
                let msg = format!(
                    "round {round}: pipeline {:?} / by hand {:?}",
                    p.err().map(|e| e.to_string()),
                    h.err().map(|e| e.to_string())
                );
                eprintln!("{msg}\n{}", platform.logs());
                failures.push(msg);
            }
        }
    }

    let mut per = Table::new(
        &format!("Build latency per round, ms ({} measured, machine: {})", pipes.len(), sys::machine()),
        &["round", "pipeline", "by hand", "ratio", "same bundle", "server image", "retries"],
    );
    for (i, (p, h)) in pipes.iter().zip(&hands).enumerate() {
        per.row(vec![
            (i + 1).to_string(),
            fmt(p.total_ms),
            fmt(h.total_ms),
            ratio(p.total_ms, h.total_ms),
            (p.bundle_digest == h.bundle_digest).to_string(),
            if p.mounted {
                "runtime + bundle mount".to_owned()
            } else if p.image_reused {
                "reused (cache hit)".to_owned()
            } else {
                "made".to_owned()
            },
            p.retries.to_string(),
        ]);
    }
    per.print();

    let pick = |f: &dyn Fn(&PipelineRun) -> f64| pipes.iter().map(f).collect::<Vec<f64>>();
    let hpick = |f: &dyn Fn(&HandRun) -> f64| hands.iter().map(f).collect::<Vec<f64>>();
    let mut wt = Table::new("Where the time goes, ms", &["phase", "p50", "p95", "min", "max"]);
    let mut row = |name: &str, v: Vec<f64>| {
        let mut cells = vec![name.to_owned()];
        cells.extend(col(&v));
        wt.row(cells);
    };
    row("pipeline: createServer → first step (API + Temporal start)", pick(&|p| p.queue_ms));
    for s in STEPS {
        row(&format!("pipeline: {s}"), pick(&|p| p.steps.get(*s).copied().unwrap_or(f64::NAN)));
    }
    row("pipeline: between steps, not in any (activity scheduling)", pick(&|p| p.between_ms));
    row("pipeline: last step → client has BUILD_SUCCEEDED", pick(&|p| p.tail_ms));
    row("pipeline: total", pick(&|p| p.total_ms));
    row("by hand: render + write tree", hpick(&|h| h.render_ms));
    row("by hand: tsc --noEmit", hpick(&|h| h.tsc_ms));
    row("by hand: esbuild", hpick(&|h| h.esbuild_ms));
    row("by hand: docker build", hpick(&|h| h.docker_build_ms));
    row("by hand: docker run + port", hpick(&|h| h.docker_run_ms));
    row(&format!("by hand: poll /healthz every {} ms", args.poll_ms), hpick(&|h| h.healthz_ms));
    row("by hand: total", hpick(&|h| h.total_ms));
    wt.print();

    let pt = Summary::of(&pick(&|p| p.total_ms));
    let ht = Summary::of(&hpick(&|h| h.total_ms));
    let same_work = |p: &PipelineRun| p.steps.get(SAME_WORK).copied().unwrap_or(f64::NAN);
    let ps = Summary::of(&pick(&same_work));
    let hs = Summary::of(&hpick(&|h| h.total_ms - h.render_ms));
    let ratios: Vec<f64> = pipes.iter().zip(&hands).map(|(p, h)| p.total_ms / h.total_ms).collect();
    let rs = Summary::of(&ratios);
    let mut sum =
        Table::new("Summary (target: pipeline/by hand ≤ 0.80)", &["figure", "pipeline", "by hand", "pipeline/by hand"]);
    sum.row(vec!["median total, ms".into(), fmt(pt.p50), fmt(ht.p50), ratio(pt.p50, ht.p50)]);
    sum.row(vec!["p95 total, ms".into(), fmt(pt.p95), fmt(ht.p95), ratio(pt.p95, ht.p95)]);
    sum.row(vec!["median of per-round ratios".into(), "".into(), "".into(), format!("{:.2}", rs.p50)]);
    sum.row(vec![
        "median check ∥ bundle → deploy vs tsc … healthz, ms".into(),
        fmt(ps.p50),
        fmt(hs.p50),
        ratio(ps.p50, hs.p50),
    ]);
    sum.print();
    if !failures.is_empty() {
        println!("FAILED rounds ({}):", failures.len());
        for f in &failures {
            println!("  {f}");
        }
    }
    drop(gql);
    platform::cleanup(&servers).await;
    let _ = docker::remove_labelled("bmm.bench", &run_label).await;
    if failures.is_empty() { Ok(()) } else { anyhow::bail!("{} round(s) failed", failures.len()) }
}

async fn hand_only(args: &Args, toolchain: PathBuf, runtime_image: String) -> anyhow::Result<()> {
    let run_label = uuid::Uuid::new_v4().simple().to_string();
    let hand = HandPipeline {
        toolchain,
        runtime_image,
        poll: Duration::from_millis(args.poll_ms),
        run_label: run_label.clone(),
    };
    let work = bmm_e2e::platform::tempfile_dir::Dir::new("bmm-bench-latency");
    let offset = specs::run_offset();
    let mut runs = Vec::new();
    for round in 0..args.warmup + args.builds {
        let description = specs::description(offset, round);
        let generated = bmm_generator::OfflineGenerator
            .generate_now(&bmm_generator::GenerateRequest { description, ..Default::default() })
            .map_err(|e| anyhow::anyhow!("offline generator: {e}"))?;
        let h = hand.run(&generated.spec, &work.path().join(format!("round-{round}"))).await?;
        eprintln!("round {round}: by hand {:.0} ms", h.total_ms);
        if round >= args.warmup {
            runs.push(h);
        }
    }
    let mut t = Table::new("By hand only, ms", &["phase", "p50", "p95", "min", "max"]);
    let phases: [(&str, HandPhase); 7] = [
        ("render + write tree", |h| h.render_ms),
        ("tsc --noEmit", |h| h.tsc_ms),
        ("esbuild", |h| h.esbuild_ms),
        ("docker build", |h| h.docker_build_ms),
        ("docker run + port", |h| h.docker_run_ms),
        ("poll /healthz", |h| h.healthz_ms),
        ("total", |h| h.total_ms),
    ];
    for (name, f) in phases {
        let mut cells = vec![name.to_owned()];
        cells.extend(col(&runs.iter().map(f).collect::<Vec<_>>()));
        t.row(cells);
    }
    t.print();
    let _ = docker::remove_labelled("bmm.bench", &run_label).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_counts_overlaps_once() {
        let t = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
        // check 0–700 beside bundle 100–300, then a gap, deploy 800–1300.
        let mut spans = vec![(t(800), t(1300)), (t(0), t(700)), (t(100), t(300))];
        assert_eq!(covered_ms(&mut spans), 1200.0);
        assert_eq!(covered_ms(&mut []), 0.0);
    }
}
