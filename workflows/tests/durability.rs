//! The build survives its worker being killed (`kill -9`) mid-bundle and
//! mid-deploy, the Temporal server being stopped and started again, and
//! Docker being unreachable for a while. Real processes, real servers.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{ContainerGuard, Env, Seed, completed_activities, containers_of, describe, history_json};

const ACTIVITIES: [&str; 6] = [
    "BuildActivities::generate",
    "BuildActivities::check",
    "BuildActivities::bundle",
    "BuildActivities::deploy",
    "BuildActivities::smoke",
    "BuildActivities::cutover",
];

fn assert_each_activity_completed_once(address: &str, workflow_id: &str) {
    let history = history_json(address, workflow_id);
    let completed = completed_activities(&history);
    for a in ACTIVITIES {
        assert_eq!(completed.get(a).copied(), Some(1), "{a} completed once; all: {completed:?}");
    }
    assert_eq!(completed.len(), ACTIVITIES.len(), "no other activity completed: {completed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_survives_kill_9_of_its_worker_during_bundle_and_deploy() {
    let mut env = Env::new("kill9").await;
    // Hold bundle and deploy long enough to kill the worker inside them.
    env.set("BMM_TEST_PAUSE", "bundle=6,deploy=6");
    let client = env.client().await;
    let input = env
        .seed(Seed { description: "echo and reverse text".into(), preview_expired: true, ..Default::default() })
        .await;
    let _g = ContainerGuard(input.build_id);

    let mut w1 = env.worker_process();
    env.start(&client, &input).await;
    env.wait_event(input.build_id, Duration::from_secs(120), |e| e.step == "bundle" && e.kind == "STEP_STARTED").await;
    w1.kill9();

    let mut w2 = env.worker_process();
    // The bundle attempt died with w1: Temporal notices the missing heartbeat and retries it on w2.
    env.wait_event(input.build_id, Duration::from_secs(120), |e| {
        e.step == "bundle" && e.kind == "STEP_STARTED" && e.message.contains("attempt 2")
    })
    .await;
    env.wait_event(input.build_id, Duration::from_secs(120), |e| e.step == "deploy" && e.kind == "STEP_STARTED").await;
    // Let the deploy get its container going, then kill in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_of(input.build_id).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w2.kill9();

    let _w3 = env.worker_process();
    let url = env.outcome(&client, &input, Duration::from_secs(300)).await.unwrap_or_else(|e| {
        panic!("build failed: {e}");
    });
    assert_eq!(url, env.cfg.server_url(&input.slug));
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    assert!(
        events.iter().any(|e| e.step == "deploy" && e.kind == "STEP_STARTED" && e.message.contains("attempt 2")),
        "deploy was retried: {text}"
    );
    assert_eq!(events.last().unwrap().kind, "BUILD_SUCCEEDED", "{text}");
    assert_each_activity_completed_once(&support::temporal_address(), &input.workflow_id());
    assert_eq!(containers_of(input.build_id).len(), 1, "exactly one container for the build");
}

/// A Temporal dev server of this test's own, on its own ports and database file.
struct OwnTemporal {
    child: Option<Child>,
    port: u16,
    db: std::path::PathBuf,
}

impl OwnTemporal {
    fn start(port: u16, db: &std::path::Path) -> OwnTemporal {
        let mut t = OwnTemporal { child: None, port, db: db.to_owned() };
        t.launch();
        t
    }

    fn launch(&mut self) {
        let child = Command::new("temporal")
            .args(["server", "start-dev", "--ip", "127.0.0.1", "--headless", "--log-level", "error"])
            .args(["--port", &self.port.to_string(), "--ui-port", &(self.port + 1000).to_string()])
            .arg("--db-filename")
            .arg(&self.db)
            .args(["--search-attribute", "BmmOrg=Keyword", "--search-attribute", "BmmServer=Keyword"])
            .args(["--search-attribute", "BmmBuild=Keyword", "--search-attribute", "BmmVersion=Int"])
            .args(["--dynamic-config-value", "system.enableActivityEagerExecution=true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("temporal server start-dev");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("temporal")
                .args(["operator", "namespace", "describe", "-n", "default", "--address"])
                .arg(format!("127.0.0.1:{}", self.port))
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "own Temporal server did not start");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGTERM and wait: a clean stop, the database file stays.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.wait();
        }
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnTemporal {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_resumes_after_the_temporal_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let port = 17000 + (std::process::id() % 900) as u16;
    let mut temporal = OwnTemporal::start(port, &dir.path().join("temporal.db"));
    let mut env = Env::with_temporal("restart", &temporal.address()).await;
    env.set("BMM_TEST_PAUSE", "bundle=8");
    let client = env.client().await;
    let input =
        env.seed(Seed { description: "upper case text".into(), preview_expired: true, ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    let _worker = env.worker_process();
    env.start(&client, &input).await;
    env.wait_event(input.build_id, Duration::from_secs(120), |e| e.step == "bundle" && e.kind == "STEP_STARTED").await;

    temporal.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    temporal.launch();

    let client = env.client().await;
    let outcome = env.outcome(&client, &input, Duration::from_secs(300)).await;
    let url = match outcome {
        Ok(url) => url,
        Err(e) => {
            panic!("build failed after the restart: {e}; events: {}", describe(&env.events(input.build_id).await))
        }
    };
    assert_eq!(url, env.cfg.server_url(&input.slug));
    let events = env.events(input.build_id).await;
    assert_eq!(events.last().unwrap().kind, "BUILD_SUCCEEDED", "{}", describe(&events));
    assert_each_activity_completed_once(&temporal.address(), &input.workflow_id());
    assert_eq!(containers_of(input.build_id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_retries_while_docker_is_unreachable_and_succeeds_when_it_is_back() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("docker.sock");
    let mut env = Env::new("docker-down").await;
    env.set("BMM_DOCKER_HOST", &format!("unix://{}", sock.display()));
    let worker = env.worker();
    let client = env.client().await;
    let input = env.seed(Seed { description: "echo".into(), preview_expired: true, ..Default::default() }).await;
    let _g = ContainerGuard(input.build_id);
    env.start(&client, &input).await;

    let retrying = env
        .wait_event(input.build_id, Duration::from_secs(180), |e| e.step == "deploy" && e.kind == "STEP_RETRYING")
        .await;
    assert!(retrying.message.starts_with("Docker is unreachable: "), "{}", retrying.message);
    assert!(retrying.message.ends_with("; retrying"), "{}", retrying.message);

    // Docker comes back: a proxy on the configured socket to the real daemon.
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind proxy socket");
    let proxy = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    let url = env.outcome(&client, &input, Duration::from_secs(300)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(url, env.cfg.server_url(&input.slug));
    let events = env.events(input.build_id).await;
    let text = describe(&events);
    assert!(!events.iter().any(|e| e.kind == "STEP_FAILED"), "{text}");
    assert_eq!(events.last().unwrap().kind, "BUILD_SUCCEEDED", "{text}");
    assert_eq!(containers_of(input.build_id).len(), 1);
    worker.stop().await;
    proxy.abort();
}
