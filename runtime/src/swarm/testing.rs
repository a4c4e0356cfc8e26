//! A private Docker engine in swarm mode for tests, so no test turns the
//! shared engine into a swarm manager (others' tests use it).
//!
//! The engine shares the host's network namespace (the test's gateway, a host
//! process, must reach the edges' loopback ports), so it is started so that it
//! touches nothing of the shared engine's: a bridge of its own instead of
//! `docker0` (`--bridge=none` would *delete* `docker0`), its own
//! `docker_gwbridge` interface name, address pools no one else uses, no
//! iptables rules, and its own socket, data root, exec root, pid file and
//! swarm ports. Dropping it removes what it made and stops it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pool the engine's local networks (its bridges) come from. The
/// engine skips ranges the host already routes, so two engines coexist.
const LOCAL_POOL: &str = "10.213.0.0/16";
/// The pool of the overlay networks (they live in the engine's namespaces).
const OVERLAY_POOL: &str = "10.214.0.0/16";

pub struct PrivateSwarm {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `unix://…` of the engine, for `BMM_DOCKER_HOST`.
    pub host: String,
    bridge: String,
    gwbridge: String,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free UDP port where swarm accepts its data path (1024-49151; the
/// kernel's ephemeral ports lie above).
fn free_data_path_port() -> u16 {
    let seed = std::process::id() as u64
        ^ u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos()));
    (0..1000u64)
        .map(|i| 20000 + ((seed.wrapping_mul(7919) + i * 104729) % 29000) as u16)
        .find(|p| std::net::UdpSocket::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free UDP port for the swarm's data path")
}

impl PrivateSwarm {
    /// Start the engine, load `image` from the shared engine at `shared_host`
    /// into it, and make it a one-node swarm. Panics with the reason when the
    /// machine cannot (not root, no dockerd): such a test must not pass.
    pub fn start(shared_host: &str, image: &str) -> PrivateSwarm {
        let is_root = run(Command::new("id").arg("-u")).map(|u| u.trim() == "0").unwrap_or(false);
        assert!(is_root, "the swarm tests start a private dockerd and need root");
        sweep_stale();
        // Short: a unix socket path has at most 108 bytes.
        let dir = tempfile::Builder::new().prefix("bmm-swarm-").tempdir_in("/tmp").expect("temp dir");
        let tag =
            &dir.path().file_name().unwrap().to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric(), "")[..];
        let tag = tag[tag.len().saturating_sub(6)..].to_ascii_lowercase();
        let bridge = format!("bmmsw{tag}");
        let gwbridge = format!("bmmgw{tag}");
        let socket = dir.path().join("docker.sock");
        let host = format!("unix://{}", socket.display());
        let mut me = PrivateSwarm { dir, child: None, host, bridge, gwbridge };

        me.make_bridge();
        let log = std::fs::File::create(me.path("dockerd.log")).expect("log file");
        let child = Command::new("dockerd")
            .args(["-H", &me.host])
            .arg("--data-root")
            .arg(me.path("data"))
            .arg("--exec-root")
            .arg(me.path("exec"))
            .arg("--pidfile")
            .arg(me.path("docker.pid"))
            .args(["--bridge", &me.bridge])
            .args(["--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            .args(["--default-address-pool", &format!("base={LOCAL_POOL},size=24")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (is docker.io installed?)");
        me.child = Some(child);
        me.wait_ready();

        // The runtime image, from the shared engine.
        let mut save = Command::new("docker")
            .args(["-H", shared_host, "save", image])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let loaded = Command::new("docker")
            .args(["-H", &me.host, "load", "-q"])
            .stdin(save.stdout.take().expect("save's output"))
            .output()
            .expect("docker load");
        let saved = save.wait().expect("docker save");
        assert!(saved.success(), "docker save {image} from {shared_host} failed");
        assert!(loaded.status.success(), "loading {image}: {}", String::from_utf8_lossy(&loaded.stderr));

        // The gateway bridge swarm would otherwise make as `docker_gwbridge`.
        me.docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "-o",
            &format!("com.docker.network.bridge.name={}", me.gwbridge),
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            "docker_gwbridge",
        ]);
        let listen = format!("127.0.0.1:{}", free_tcp_port());
        let data_port = free_data_path_port().to_string();
        me.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            &listen,
            "--data-path-port",
            &data_port,
            "--default-addr-pool",
            OVERLAY_POOL,
        ]);
        me
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Run the docker CLI against this engine; panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        run(Command::new("docker").args(["-H", &self.host]).args(args)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same, returning the failure.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("docker").args(["-H", &self.host]).args(args))
    }

    fn make_bridge(&self) {
        // A /24 the host does not route yet.
        let routes = run(Command::new("ip").args(["-4", "route"])).expect("ip route");
        let third = (0..=255u16)
            .rev()
            .find(|n| !routes.contains(&format!("10.213.{n}.")))
            .expect("a free /24 in 10.213.0.0/16");
        run(Command::new("ip").args(["link", "add", &self.bridge, "type", "bridge"])).expect("bridge");
        run(Command::new("ip").args(["addr", "add", &format!("10.213.{third}.1/24"), "dev", &self.bridge]))
            .expect("bridge address");
        run(Command::new("ip").args(["link", "set", &self.bridge, "up"])).expect("bridge up");
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.try_docker(&["version", "--format", "{{.Server.Version}}"]).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
                panic!("the private dockerd exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "the private dockerd did not answer within 60s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What a test killed before its drop left behind: the bridges of a private
/// engine whose dockerd is gone (a running one may be another test's).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for dir in entries.flatten().map(|e| e.path()) {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if !name.starts_with("bmm-swarm-") {
            continue;
        }
        let pid = std::fs::read_to_string(dir.join("docker.pid")).ok().and_then(|p| p.trim().parse::<u32>().ok());
        if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
            continue;
        }
        // Another test's engine that is still starting has no pid file yet.
        let young = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(120));
        if pid.is_none() && young {
            continue;
        }
        let tag: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
        let tag = tag[tag.len().saturating_sub(6)..].to_ascii_lowercase();
        for link in [format!("bmmgw{tag}"), format!("bmmsw{tag}")] {
            let _ = run(Command::new("ip").args(["link", "del", &link]));
        }
        let _ = run(Command::new("umount").arg("-R").arg(dir.join("data")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

impl Drop for PrivateSwarm {
    fn drop(&mut self) {
        // What the engine made on the host goes with it: services and
        // containers first, then their networks (and so their bridges).
        let services = self.try_docker(&["service", "ls", "-q"]).unwrap_or_default();
        for s in services.split_whitespace() {
            let _ = self.try_docker(&["service", "rm", s]);
        }
        let containers = self.try_docker(&["ps", "-aq"]).unwrap_or_default();
        for c in containers.split_whitespace() {
            let _ = self.try_docker(&["rm", "-f", c]);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let left = self.try_docker(&["ps", "-aq"]).unwrap_or_default();
            let nets = self.try_docker(&["network", "ls", "-q", "--filter", "type=custom"]).unwrap_or_default();
            for n in nets.split_whitespace() {
                let _ = self.try_docker(&["network", "rm", n]);
            }
            if left.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = self.try_docker(&["swarm", "leave", "--force"]);
        let _ = self.try_docker(&["network", "rm", "docker_gwbridge"]);
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for link in [&self.gwbridge, &self.bridge] {
            let _ = run(Command::new("ip").args(["link", "del", link]));
        }
        // Overlay mounts may linger a moment; the folder is best effort.
        let _ = run(Command::new("umount").arg("-R").arg(self.path("data")));
    }
}
