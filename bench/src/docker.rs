//! The Docker CLI, the way a shell script calls it, plus the cleanup of what a
//! benchmark caused to exist and container memory from the cgroup.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// Run `docker args…`; its trimmed stdout, or an error with stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .env("DOCKER_CLI_HINTS", "false")
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("docker {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Remove every container carrying `label=value` (running or not) and then
/// the images they ran, unless something else still uses them. Returns
/// (containers, images) removed.
pub async fn remove_labelled(label: &str, value: &str) -> (usize, usize) {
    let filter = format!("label={label}={value}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]).await.unwrap_or_default();
    let mut images = Vec::new();
    let mut containers = 0;
    for id in ids.lines().filter(|l| !l.is_empty()) {
        if let Ok(img) = docker(&["inspect", "-f", "{{.Image}}", id]).await {
            images.push(img);
        }
        if docker(&["rm", "-f", "-v", id]).await.is_ok() {
            containers += 1;
        }
    }
    images.sort();
    images.dedup();
    let mut removed = 0;
    for img in images {
        // No -f: an image another container (someone else's) runs stays.
        if docker(&["rmi", &img]).await.is_ok() {
            removed += 1;
        }
    }
    (containers, removed)
}

/// Remove an image by tag or id if it exists and nothing uses it.
pub async fn remove_image(image: &str) -> bool {
    docker(&["rmi", image]).await.is_ok()
}

pub async fn image_exists(image: &str) -> bool {
    docker(&["image", "inspect", "-f", "{{.Id}}", image]).await.is_ok()
}

/// Memory of a running container as the kernel accounts it.
#[derive(Debug, Clone, Default)]
pub struct ContainerMemory {
    /// cgroup `memory.usage_in_bytes` (v1) / `memory.current` (v2): everything charged, page cache included.
    pub cgroup_usage: u64,
    /// Anonymous memory (`total_rss` v1 / `anon` v2): what the process really holds.
    pub anon: u64,
    /// Page cache charged to the container (`total_cache` / `file`).
    pub cache: u64,
    /// What `docker stats` shows: usage minus inactive file pages.
    pub docker_stats: u64,
    /// `VmRSS` of the container's main process (node), seen from the host.
    pub main_rss: u64,
    /// Its private part (`RssAnon`); the rest is file pages (the node binary)
    /// shared by every container of the same runtime image.
    pub main_rss_anon: u64,
}

/// Read a container's memory from its cgroup (v1 or v2) and its main process.
pub async fn container_memory(container: &str) -> anyhow::Result<ContainerMemory> {
    let id = docker(&["inspect", "-f", "{{.Id}}", container]).await?;
    let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", container]).await?.parse()?;
    let v1 =
        [format!("/sys/fs/cgroup/memory/docker/{id}"), format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope")];
    let v2 = [format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"), format!("/sys/fs/cgroup/docker/{id}")];
    let stat = |dir: &str| -> Option<std::collections::HashMap<String, u64>> {
        let text = std::fs::read_to_string(format!("{dir}/memory.stat")).ok()?;
        Some(
            text.lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
                })
                .collect(),
        )
    };
    let read = |p: String| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let main_rss = crate::sys::rss_bytes(pid).unwrap_or(0);
    let main_rss_anon = crate::sys::status_bytes(pid, "RssAnon").unwrap_or(0);
    for dir in &v1 {
        if let (Some(usage), Some(s)) = (read(format!("{dir}/memory.usage_in_bytes")), stat(dir)) {
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            return Ok(ContainerMemory {
                cgroup_usage: usage,
                anon: g("total_rss"),
                cache: g("total_cache"),
                docker_stats: usage.saturating_sub(g("total_inactive_file")),
                main_rss,
                main_rss_anon,
            });
        }
    }
    for dir in &v2 {
        if let (Some(usage), Some(s)) = (read(format!("{dir}/memory.current")), stat(dir)) {
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            return Ok(ContainerMemory {
                cgroup_usage: usage,
                anon: g("anon"),
                cache: g("file"),
                docker_stats: usage.saturating_sub(g("inactive_file")),
                main_rss,
                main_rss_anon,
            });
        }
    }
    anyhow::bail!("no memory cgroup found for container {container} ({id})")
}

/// `docker stats --no-stream` memory column, e.g. `41.2MiB / 256MiB`.
pub async fn stats_mem(container: &str) -> String {
    docker(&["stats", "--no-stream", "--format", "{{.MemUsage}}", container]).await.unwrap_or_default()
}

/// Poll `url` until it answers 2xx, every `every`; the time it took.
pub async fn poll_healthy(url: &str, every: Duration, timeout: Duration) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build()?;
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            anyhow::bail!("{url} not healthy within {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}
