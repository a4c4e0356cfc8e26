//! A private Docker daemon for tests and benchmarks that kill and restart
//! Docker: its own socket, data root, exec root, pid file, bridge and
//! config file, so the shared daemon (and every other test on it) is never
//! touched. It runs without iptables (the shared daemon's chains stay
//! its own); servers publish on 127.0.0.1 through docker-proxy, which needs none.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

pub struct PrivateDockerd {
    pub dir: PathBuf,
    /// `unix:///…/docker.sock`, for `BMM_DOCKER_HOST` and `docker -H`.
    pub host: String,
    pub bridge: String,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Start a daemon of its own and wait until it answers; `None` (with the
    /// reason on stderr) where this machine cannot run one (not root, no dockerd).
    pub async fn start() -> Option<PrivateDockerd> {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        // Short: unix socket paths are limited to 108 bytes.
        let dir = PathBuf::from(format!("/tmp/bmmd-{id}"));
        std::fs::create_dir_all(dir.join("data")).ok()?;
        std::fs::create_dir_all(dir.join("exec")).ok()?;
        std::fs::write(dir.join("daemon.json"), "{}").ok()?;
        let bridge = format!("bmmt{id}");
        // A /24 of 10.213.0.0/16 from the id, so parallel daemons do not collide.
        let octet = u8::from_str_radix(&id[..2], 16).unwrap_or(1).max(1);
        let bridge_ip = format!("10.213.{octet}.1/24");
        let ok = run("ip", &["link", "add", "name", &bridge, "type", "bridge"]).await
            && run("ip", &["addr", "add", &bridge_ip, "dev", &bridge]).await
            && run("ip", &["link", "set", &bridge, "up"]).await;
        if !ok {
            eprintln!("PrivateDockerd: could not create bridge {bridge} (needs root and iproute2)");
            let _ = run("ip", &["link", "del", &bridge]).await;
            return None;
        }
        let mut d =
            PrivateDockerd { host: format!("unix://{}", dir.join("docker.sock").display()), dir, bridge, child: None };
        if !d.spawn().await {
            return None;
        }
        Some(d)
    }

    async fn spawn(&mut self) -> bool {
        let log = match std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log")) {
            Ok(f) => f,
            Err(_) => return false,
        };
        let err = match log.try_clone() {
            Ok(f) => f,
            Err(_) => return false,
        };
        let p = |name: &str| self.dir.join(name).display().to_string();
        let child = Command::new("dockerd")
            .args([
                "-H",
                &self.host,
                "--data-root",
                &p("data"),
                "--exec-root",
                &p("exec"),
                "--pidfile",
                &p("docker.pid"),
                "--config-file",
                &p("daemon.json"),
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(false)
            .spawn();
        match child {
            Ok(c) => self.child = Some(c),
            Err(e) => {
                eprintln!("PrivateDockerd: dockerd did not start: {e}");
                return false;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.docker(&["version", "--format", "{{.Server.Version}}"]).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "PrivateDockerd: no answer within 60 s:\n{}",
            crate::platform::tail(&self.dir.join("dockerd.log"), 30)
        );
        false
    }

    /// `docker -H <this daemon> args…`, its stdout trimmed.
    pub async fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Copy an image of the shared daemon into this one (`docker save | docker -H … load`).
    pub async fn load_image(&self, image: &str) -> Result<(), String> {
        let script = format!("docker save {image} | docker -H {} load", self.host);
        let out = Command::new("sh").arg("-c").arg(&script).output().await.map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    /// `kill -9` of this daemon (its containers' shims live on, as after a crash).
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Start it again on the same folders, and wait until it answers.
    pub async fn restart(&mut self) -> bool {
        self.spawn().await
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::platform::tail(&self.dir.join("dockerd.log"), lines)
    }

    fn pid_path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // Everything it ran goes with it: containers first (through the daemon), then the daemon, its bridge, its folders.
        let host = self.host.clone();
        let (bridge, dir) = (self.bridge.clone(), self.pid_path().to_owned());
        let child = self.child.take();
        let _ = std::thread::spawn(move || {
            let sh = |s: &str| std::process::Command::new("sh").arg("-c").arg(s).status();
            let _ = sh(&format!("docker -H {host} ps -aq | xargs -r docker -H {host} rm -f >/dev/null 2>&1"));
            if let Some(c) = child
                && let Some(pid) = c.id()
            {
                let _ = sh(&format!("kill {pid}; for i in $(seq 50); do kill -0 {pid} 2>/dev/null || break; sleep 0.2; done; kill -9 {pid} 2>/dev/null"));
            }
            // The managed containerd of this daemon only (its pid file is in our exec root).
            let _ = sh(&format!("pkill -F {}/exec/containerd/containerd.pid 2>/dev/null", dir.display()));
            let _ = sh(&format!("ip link del {bridge} 2>/dev/null"));
            let _ = sh(&format!("umount -R {d}/data/* 2>/dev/null; umount -R {d}/exec/* 2>/dev/null; rm -rf {d}", d = dir.display()));
        })
        .join();
    }
}

async fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdin(Stdio::null()).status().await.is_ok_and(|s| s.success())
}
