//! One platform under test: `bmm dev` (or separate `bmm api` / `bmm worker`
//! processes) with a database of its own.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bmm_db::testing::TestDb;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Where the `bmm` binary is: `BMM_BIN`, else the cargo target folder.
pub fn bmm_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BMM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let bin = target.join("debug/bmm");
    assert!(bin.exists(), "{} is missing: run `cargo build -p bmm` first (scripts/test.sh does)", bin.display());
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[derive(Default, Clone)]
pub struct PlatformOptions {
    /// Extra environment for every process.
    pub env: Vec<(String, String)>,
    /// Run `bmm api` and `bmm worker` processes instead of one `bmm dev`.
    pub apis: usize,
    pub workers: usize,
}

pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

pub struct Platform {
    pub db: TestDb,
    /// Base URLs of the API processes (one for `bmm dev`).
    pub urls: Vec<String>,
    pub task_queue: String,
    pub data_dir: tempfile_dir::Dir,
    pub processes: Vec<Process>,
    env: Vec<(String, String)>,
}

/// A temporary folder removed on drop (kept tiny to avoid a dependency).
pub mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Platform {
    pub async fn start(opts: PlatformOptions) -> Platform {
        let db = TestDb::new().await;
        let task_queue = format!("bmm-test-{}", uuid::Uuid::new_v4().simple());
        let data_dir = tempfile_dir::Dir::new("bmm-e2e");
        let mut env: Vec<(String, String)> = vec![
            ("BMM_DATABASE_URL".into(), db.url.clone()),
            ("BMM_TEMPORAL_TASK_QUEUE".into(), task_queue.clone()),
            ("BMM_DATA_DIR".into(), data_dir.path().display().to_string()),
            ("BMM_GENERATOR".into(), "offline".into()),
            ("BMM_CONFIG".into(), "/nonexistent/bmm.toml".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(opts.env.iter().cloned());
        let mut p = Platform { db, urls: Vec::new(), task_queue, data_dir, processes: Vec::new(), env };
        let (apis, workers, dev) =
            if opts.apis == 0 && opts.workers == 0 { (1, 0, true) } else { (opts.apis, opts.workers, false) };
        for i in 0..apis {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let extra = vec![
                ("BMM_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
                ("BMM_PUBLIC_URL".to_owned(), p.urls.first().cloned().unwrap_or_else(|| url.clone())),
            ];
            let cmd = if dev { "dev" } else { "api" };
            p.spawn(&format!("{cmd}{i}"), cmd, &extra);
            p.urls.push(url);
        }
        for i in 0..workers {
            p.spawn(&format!("worker{i}"), "worker", &[]);
        }
        for url in p.urls.clone() {
            p.wait_ready(&url).await;
        }
        p
    }

    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    fn spawn(&mut self, name: &str, subcommand: &str, extra: &[(String, String)]) {
        let log = self.data_dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bmm_bin());
        cmd.arg(subcommand).stdin(Stdio::null()).stdout(file.try_clone().expect("dup")).stderr(file).kill_on_drop(true);
        for (k, v) in self.env.iter().chain(extra) {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn bmm");
        self.processes.push(Process { name: name.to_owned(), child, log });
    }

    /// Start one more `bmm worker` (after a kill, say).
    pub fn spawn_worker(&mut self, name: &str) {
        self.spawn(name, "worker", &[]);
    }

    async fn wait_ready(&mut self, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            for p in &mut self.processes {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("{} exited with {status}:\n{}", p.name, tail(&p.log, 60));
                }
            }
            if Instant::now() > deadline {
                panic!("{url} never became ready:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The tails of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.processes.iter().map(|p| format!("--- {}\n{}", p.name, tail(&p.log, 40))).collect::<Vec<_>>().join("\n")
    }

    /// Run a `bmm` subcommand against this platform and return its stdout.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(bmm_bin());
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("BMM_PUBLIC_URL", self.url());
        let out = cmd.output().await.expect("run bmm");
        assert!(out.status.success(), "bmm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub async fn api_key(&self, email: &str) -> String {
        self.cli(&["org", "create-api-key", "--email", email]).await
    }
}

pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A GraphQL client with an API key.
#[derive(Clone)]
pub struct Gql {
    pub url: String,
    pub key: String,
    http: reqwest::Client,
}

impl Gql {
    pub fn new(base: &str, key: &str) -> Gql {
        Gql { url: format!("{base}/graphql"), key: key.to_owned(), http: reqwest::Client::new() }
    }

    /// The whole response (data and errors).
    pub async fn raw(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(&self.url)
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql")
            .json()
            .await
            .expect("JSON response")
    }

    /// `data`, failing on any error.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let v = self.raw(query, variables).await;
        assert!(v.get("errors").is_none_or(|e| e.is_null()), "GraphQL errors: {v}");
        v["data"].clone()
    }

    /// Preview and create a server from a description; returns (server, build id).
    pub async fn create_server(&self, description: &str, name: &str) -> (Value, String) {
        let preview = self
            .data(
                "mutation($d: String!) { previewServer(input: {description: $d}) { id } }",
                json!({ "d": description }),
            )
            .await;
        let created = self
            .data(
                "mutation($p: ID!, $n: String!) { createServer(input: {previewId: $p, name: $n, credentials: []}) { server { id slug url } build { id } } }",
                json!({ "p": preview["previewServer"]["id"], "n": name }),
            )
            .await;
        let c = &created["createServer"];
        (c["server"].clone(), c["build"]["id"].as_str().expect("build id").to_owned())
    }

    /// Poll until the build ends; returns its final status.
    pub async fn wait_build(&self, build_id: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.data("query($id: ID!) { build(id: $id) { status } }", json!({ "id": build_id })).await;
            let s = v["build"]["status"].as_str().unwrap_or_default().to_owned();
            if matches!(s.as_str(), "SUCCEEDED" | "FAILED" | "CANCELLED") || Instant::now() > deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every event of a build, as `seq step kind message` lines (for messages).
    pub async fn events(&self, build_id: &str) -> Vec<Value> {
        let v = self
            .data(
                "query($id: ID!) { build(id: $id) { events(after: 0, limit: 100) { seq step kind message } } }",
                json!({ "id": build_id }),
            )
            .await;
        v["build"]["events"].as_array().cloned().unwrap_or_default()
    }
}
