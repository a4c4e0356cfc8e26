//! Tests against the real Docker daemon and the runtime image.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use super::testing::{Cleanup, TEST_SERVER, config, docker, spec};
use super::*;

async fn inspect(name: &str) -> ContainerInspectResponse {
    let c = docker().client().await.unwrap();
    c.inspect_container(name, None::<InspectContainerOptions>).await.unwrap()
}

async fn count_build(build_id: Uuid) -> usize {
    let c = docker().client().await.unwrap();
    let filters = HashMap::from([("label".to_owned(), vec![format!("bmm.build={build_id}")])]);
    c.list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn docker_deploy_runs_a_hardened_healthy_container() {
    let d = docker();
    let (spec, _jwks) = spec(TEST_SERVER, &[("API_TOKEN", "s3cret-value"), ("BMM_SERVER_URL", "http://x/s/t/mcp")]);
    let _cleanup = Cleanup(spec.build_id);
    let deployed = d.deploy(&spec).await.expect("deploy");
    assert!(!deployed.adopted);
    assert_eq!(deployed.name, container_name(&spec.slug, 1, spec.build_id));
    assert!(deployed.image_tag.starts_with("bmm-server:"));

    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", deployed.port)).await.unwrap();
    assert_eq!(health.status(), 200);

    let info = inspect(&deployed.name).await;
    let hc = info.host_config.clone().unwrap();
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(hc.security_opt.unwrap().iter().any(|o| o.starts_with("no-new-privileges")));
    assert_ne!(hc.privileged, Some(true));
    assert_eq!(hc.memory, Some(config().container_memory_mib * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some((config().container_cpus * 1e9) as i64));
    assert_eq!(hc.pids_limit, Some(PIDS_LIMIT));
    let tmp = hc.tmpfs.unwrap();
    assert!(tmp["/tmp"].contains("noexec") && tmp["/tmp"].contains("size="), "{tmp:?}");
    let restart = hc.restart_policy.unwrap();
    assert_eq!(restart.name, Some(RestartPolicyNameEnum::UNLESS_STOPPED));
    let labels = info.config.clone().unwrap().labels.unwrap();
    assert_eq!(labels.get(PLATFORM_LABEL), Some(&config().platform_id), "scoped to its platform");

    let config = info.config.clone().unwrap();
    assert_eq!(config.user.as_deref(), Some("10001:10001"));
    let labels = config.labels.unwrap();
    assert_eq!(labels["bmm.org"], spec.org_id.to_string());
    assert_eq!(labels["bmm.server"], spec.server_id.to_string());
    assert_eq!(labels["bmm.version"], "1");
    assert_eq!(labels["bmm.build"], spec.build_id.to_string());
    assert_eq!(labels[MANAGED_LABEL], "true");
    // The image was committed from a helper container: its helper label does
    // not pass to the server (the helper sweep must never take a server).
    assert_ne!(labels.get(HELPER_LABEL).map(String::as_str), Some("true"), "{labels:?}");
    assert_eq!(config.cmd, Some(vec![BUNDLE_PATH.to_owned()]));
    assert_eq!(config.working_dir.as_deref(), Some(APP_DIR));
    let env = config.env.unwrap();
    assert!(env.contains(&"PORT=8080".to_owned()));
    assert!(env.contains(&"BMM_JWKS_FILE=/etc/bmm/jwks/jwks.json".to_owned()));

    // Mounts: the JWKS folder read-only, and never the Docker socket.
    let mounts = info.mounts.unwrap();
    assert!(mounts.iter().all(|m| !m.source.as_deref().unwrap_or("").contains("docker.sock")));
    let jwks = mounts.iter().find(|m| m.destination.as_deref() == Some(JWKS_MOUNT)).expect("jwks mount");
    assert_eq!(jwks.rw, Some(false));

    // Published on loopback only.
    let ports = info.network_settings.unwrap().ports.unwrap();
    let bindings = ports["8080/tcp"].clone().unwrap();
    assert!(!bindings.is_empty());
    assert!(bindings.iter().all(|b| b.host_ip.as_deref() == Some("127.0.0.1")), "{bindings:?}");

    // Secrets stay out of Debug output.
    assert!(!format!("{spec:?}").contains("s3cret-value"));

    // Logs: the server's JSON line, with stream and timestamp.
    let lines: Vec<LogLine> = d.logs(&deployed.name, 10, false).map(|l| l.unwrap()).collect().await;
    assert!(lines.iter().any(|l| l.line.contains("listening") && l.stream == LogStream::Stdout), "{lines:?}");

    // Following the logs: a line logged after the stream opened shows up in it.
    let mut follow = Box::pin(d.logs(&deployed.name, 0, true));
    let reader = tokio::spawn(async move {
        while let Some(line) = follow.next().await {
            let line = line.unwrap();
            if line.line.contains("notifications/followed") {
                return Some(line);
            }
        }
        None
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let poke = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/mcp", deployed.port))
        .bearer_auth("test-token")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/followed"}"#);
    assert_eq!(poke.send().await.unwrap().status(), 202);
    let followed = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("no followed log line within 10s")
        .unwrap()
        .expect("the followed log stream ended");
    assert_eq!(followed.stream, LogStream::Stdout);

    let listed = d.list(&ListFilter::server(spec.server_id)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].build_id, Some(spec.build_id));
    assert_eq!(listed[0].server_id, Some(spec.server_id));
    assert_eq!(listed[0].version, Some(1));
    assert_eq!(listed[0].state, "running");
    assert_eq!(listed[0].bundle_digest.as_deref(), Some(spec.bundle_digest.as_str()));
    let endpoint = Endpoint { host: "127.0.0.1".to_owned(), port: deployed.port };
    assert_eq!(listed[0].endpoint.as_ref(), Some(&endpoint));
    // Adopting by name reports the same container, and the endpoint the gateway routes to.
    let adopted = d.adopt(&deployed.name).await.unwrap().expect("adopted");
    assert_eq!((adopted.id.as_str(), adopted.running), (listed[0].id.as_str(), true));
    assert_eq!(adopted.endpoint.as_ref(), Some(&endpoint));
    let by_build = d.list(&ListFilter { build_id: Some(spec.build_id), ..Default::default() }).await.unwrap();
    assert_eq!(by_build.len(), 1);
    assert!(d.list(&ListFilter::server(Uuid::new_v4())).await.unwrap().is_empty());

    // Graceful stop: SIGTERM ends the server with code 0 well before the grace period.
    let started = Instant::now();
    d.stop(&deployed.name, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let state = inspect(&deployed.name).await.state.unwrap();
    assert_eq!(state.exit_code, Some(0));
    let stopped = d.adopt(&deployed.name).await.unwrap().expect("still there");
    assert!(!stopped.running);
    assert_eq!(stopped.endpoint, None, "a stopped container is not routed to");
    d.stop(&deployed.name, Duration::from_secs(1)).await.expect("stopping a stopped container is fine");

    assert_eq!(d.remove_build(spec.build_id).await.unwrap(), 1);
    assert_eq!(count_build(spec.build_id).await, 0);
    d.remove(&deployed.name).await.expect("removing a missing container is fine");
    assert_eq!(d.adopt(&deployed.name).await.unwrap(), None);
}

#[tokio::test]
async fn docker_mount_mode_runs_the_runtime_image_with_the_bundle_read_only() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.data_dir = data.path().to_owned();
    cfg.bundle_delivery = bmm_core::config::BundleDelivery::Mount;
    let d = Docker::connect(&cfg).unwrap();
    let (spec, _jwks) = spec(TEST_SERVER, &[]);
    let _cleanup = Cleanup(spec.build_id);
    let deployed = d.deploy(&spec).await.expect("deploy");
    assert_eq!(deployed.image_tag, cfg.runtime_image, "no image of its own");
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", deployed.port)).await.unwrap();
    assert_eq!(health.status(), 200);

    let file = data.path().join("bundles").join(format!("{}.mjs", spec.bundle_digest.trim_start_matches("sha256:")));
    assert_eq!(std::fs::read(&file).unwrap(), TEST_SERVER);
    let info = inspect(&deployed.name).await;
    let mount = info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(BUNDLE_PATH))
        .expect("the bundle is mounted");
    assert_eq!(mount.source.as_deref(), Some(file.to_str().unwrap()));
    assert_eq!(mount.rw, Some(false), "read-only");
    assert_eq!(info.host_config.unwrap().readonly_rootfs, Some(true));

    // The same bundle again (another build) shares the file; a damaged file is replaced.
    std::fs::write(&file, b"tampered").unwrap();
    let (mut again, _jwks2) = super::testing::spec(TEST_SERVER, &[]);
    again.jwks_dir = spec.jwks_dir.clone();
    let _cleanup2 = Cleanup(again.build_id);
    d.deploy(&again).await.expect("second deploy");
    assert_eq!(std::fs::read(&file).unwrap(), TEST_SERVER);
    assert_eq!(d.remove_build(spec.build_id).await.unwrap(), 1);
    assert_eq!(d.remove_build(again.build_id).await.unwrap(), 1);

    // A folder Docker's bind syntax cannot name is refused before Docker is asked.
    cfg.data_dir = "/tmp/a:b".into();
    assert!(matches!(Docker::connect(&cfg), Err(DockerError::BadRequest(_))));
}

#[tokio::test]
async fn docker_redeploy_adopts_the_same_container() {
    let d = docker();
    let (spec, _jwks) = spec(TEST_SERVER, &[]);
    let _cleanup = Cleanup(spec.build_id);
    let first = d.deploy(&spec).await.expect("first deploy");
    let second = d.deploy(&spec).await.expect("second deploy");
    assert!(second.adopted);
    assert_eq!(first.id, second.id);
    assert_eq!(first.image_id, second.image_id);
    assert_eq!(count_build(spec.build_id).await, 1);

    // A stopped container is started again, on a port read back after the start.
    d.stop(&first.name, Duration::from_secs(5)).await.unwrap();
    let third = d.deploy(&spec).await.expect("deploy after stop");
    assert!(third.adopted);
    assert_eq!(third.id, first.id);
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", third.port)).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(count_build(spec.build_id).await, 1);

    // Another bundle for the same build name: the container is recreated on the new image.
    let other = [TEST_SERVER, b"\n// v2\n"].concat();
    let mut changed = spec.clone();
    changed.bundle_digest = bmm_core::digest::sha256(&other);
    changed.bundle = other;
    let fourth = d.deploy(&changed).await.expect("deploy of another bundle");
    assert!(!fourth.adopted);
    assert_ne!(fourth.id, first.id);
    assert_ne!(fourth.image_id, first.image_id);
    assert_eq!(count_build(spec.build_id).await, 1);

    assert_eq!(d.remove_build(spec.build_id).await.unwrap(), 1);
}

#[tokio::test]
async fn docker_remove_build_removes_the_image_only_when_unused() {
    let d = docker();
    let c = d.client().await.unwrap();
    // A bundle of its own, so no other test shares the image.
    let bundle = [TEST_SERVER, format!("\n// {}\n", Uuid::new_v4()).as_bytes()].concat();
    let (first, _j1) = spec(&bundle, &[]);
    let (second, _j2) = spec(&bundle, &[]);
    let _c1 = Cleanup(first.build_id);
    let _c2 = Cleanup(second.build_id);
    let a = d.deploy(&first).await.unwrap();
    let b = d.deploy(&second).await.unwrap();
    assert_eq!(a.image_id, b.image_id, "the same bundle reuses one image");

    // Still used by the second build's container: kept.
    assert_eq!(d.remove_build(first.build_id).await.unwrap(), 1);
    assert!(c.inspect_image(&a.image_tag).await.is_ok());
    // Unused now: removed; the runtime image is never touched.
    assert_eq!(d.remove_build(second.build_id).await.unwrap(), 1);
    assert!(matches!(
        c.inspect_image(&a.image_tag).await,
        Err(BollardError::DockerResponseServerError { status_code: 404, .. })
    ));
    assert!(c.inspect_image(&config().runtime_image).await.is_ok());

    // A later deploy of the same bundle builds it again.
    let (third, _j3) = spec(&bundle, &[]);
    let _c3 = Cleanup(third.build_id);
    let again = d.deploy(&third).await.unwrap();
    assert_eq!(again.image_tag, a.image_tag);
    assert_eq!(d.remove_build(third.build_id).await.unwrap(), 1);
}

#[tokio::test]
async fn docker_container_exiting_at_start_fails_with_its_logs() {
    let d = docker();
    let (spec, _jwks) = spec(TEST_SERVER, &[("TEST_CRASH", "1")]);
    let _cleanup = Cleanup(spec.build_id);
    let err = d.deploy(&spec).await.expect_err("a crashing server must fail");
    let DockerError::Failed(msg) = &err else { panic!("expected Failed, got {err:?}") };
    assert!(msg.contains("exited at start"), "{msg}");
    assert!(msg.contains("fatal: TEST_CRASH is set"), "{msg}");
    assert!(!err.is_retryable());
    // The failed container is gone, so a retry starts clean.
    assert_eq!(count_build(spec.build_id).await, 0);
}

#[tokio::test]
async fn docker_bad_bundle_fails_with_the_syntax_error() {
    let d = docker();
    let bundle = format!("export const x = ;\n// {}\n", Uuid::new_v4());
    let (spec, _jwks) = spec(bundle.as_bytes(), &[]);
    let _cleanup = Cleanup(spec.build_id);
    let err = d.deploy(&spec).await.expect_err("a broken bundle must fail");
    let DockerError::Failed(msg) = &err else { panic!("expected Failed, got {err:?}") };
    assert!(msg.contains("SyntaxError"), "{msg}");
    assert_eq!(count_build(spec.build_id).await, 0);
    // Its image (used by nothing else) went with it.
    let c = d.client().await.unwrap();
    let runtime_id = c.inspect_image(&config().runtime_image).await.unwrap().id.unwrap();
    let tag = Docker::image_tag(&runtime_id, &spec.bundle_digest);
    assert!(c.inspect_image(&tag).await.is_err(), "{tag} was left behind");
}

#[tokio::test]
async fn docker_bad_requests_are_refused_before_touching_docker() {
    let d = docker();
    type Change = Box<dyn Fn(&mut DeploySpec)>;
    let cases: Vec<(&str, Change)> = vec![
        ("empty", Box::new(|s| s.bundle.clear())),
        ("does not match its digest", Box::new(|s| s.bundle.push(b' '))),
        ("not a valid slug", Box::new(|s| s.slug = "Bad Slug".into())),
        ("set by the platform", Box::new(|s| s.env.push(("PORT".into(), "1".into())))),
        ("not valid", Box::new(|s| s.env.push(("A=B".into(), "1".into())))),
        ("does not exist", Box::new(|s| s.jwks_dir = "/nonexistent/jwks".into())),
        ("has no jwks.json", Box::new(|s| std::fs::remove_file(s.jwks_dir.join("jwks.json")).unwrap())),
        (
            "not readable by the container's user",
            Box::new(|s| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&s.jwks_dir, std::fs::Permissions::from_mode(0o700)).unwrap()
            }),
        ),
    ];
    for (want, change) in cases {
        let (mut spec, _jwks) = spec(TEST_SERVER, &[("SECRET_VALUE_KEY", "hunter2")]);
        change(&mut spec);
        let err = d.deploy(&spec).await.expect_err(want);
        assert!(matches!(err, DockerError::BadRequest(_)), "{want}: {err:?}");
        assert!(err.to_string().contains(want), "{want}: {err}");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!err.is_retryable());
    }
}

#[tokio::test]
async fn docker_unreachable_is_unavailable_and_retryable() {
    for host in ["unix:///tmp/bmm-no-such-docker.sock", "tcp://127.0.0.1:1"] {
        let mut cfg = config();
        cfg.docker_host = host.to_owned();
        let d = Docker::connect(&cfg).expect("connect is lazy");
        let err = d.ping().await.expect_err("ping must fail");
        assert!(matches!(err, DockerError::Unavailable(_)), "{host}: {err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("cannot reach the Docker daemon"), "{err}");
        let (spec, _jwks) = spec(TEST_SERVER, &[]);
        let err = d.deploy(&spec).await.expect_err("deploy must fail");
        assert!(err.is_retryable(), "{host}: {err:?}");
        assert!(d.remove_build(spec.build_id).await.unwrap_err().is_retryable());
    }
    let mut cfg = config();
    cfg.docker_host = "ftp://nope".into();
    assert!(matches!(Docker::connect(&cfg), Err(DockerError::BadRequest(_))));
}

#[tokio::test]
async fn docker_missing_runtime_image_is_a_clear_failure() {
    let mut cfg = config();
    cfg.runtime_image = "bmm-runtime:does-not-exist".into();
    let d = Docker::connect(&cfg).unwrap();
    let (spec, _jwks) = spec(TEST_SERVER, &[]);
    let err = d.deploy(&spec).await.expect_err("missing image");
    let DockerError::Failed(msg) = &err else { panic!("expected Failed, got {err:?}") };
    assert!(msg.contains("runtime image bmm-runtime:does-not-exist is missing"), "{msg}");
}

#[test]
fn docker_errors_map_to_plain_classes() {
    let server = |status_code: u16, message: &str| BollardError::DockerResponseServerError {
        status_code,
        message: message.to_owned(),
    };
    let clash = map_bollard(
        "unix:///var/run/docker.sock",
        server(
            500,
            "driver failed programming external connectivity: Bind for 127.0.0.1:8080 failed: port is already allocated",
        ),
        "start the container",
    );
    assert!(matches!(&clash, DockerError::Failed(m) if m.contains("the host port is already in use")), "{clash:?}");
    assert!(!clash.is_retryable());
    let refused = map_bollard("h", server(400, "invalid mount config"), "create the container");
    assert!(
        matches!(&refused, DockerError::BadRequest(m) if m == "Docker refused to create the container: invalid mount config")
    );
    let gone = map_bollard("unix:///x.sock", BollardError::SocketNotFoundError("/x.sock".into()), "ping");
    assert_eq!(
        gone.to_string(),
        "Docker is unavailable: cannot reach the Docker daemon at unix:///x.sock: no socket at /x.sock"
    );
    assert!(gone.is_retryable());
    assert!(map_bollard("h", BollardError::RequestTimeoutError, "ping").is_retryable());
}

#[test]
fn names_and_log_lines() {
    let id: Uuid = "0123abcd-0000-4000-8000-0000cafe0123".parse().unwrap();
    assert_eq!(container_name("weather", 3, id), "bmm-weather-v3-0000cafe0123");
    // Two UUIDv7 build ids of the same moment still name different containers.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    assert_ne!(container_name("weather", 3, a), container_name("weather", 3, b));
    let l = parse_log_line(LogStream::Stderr, "2026-11-26T10:00:00.123456789Z boom\n");
    assert_eq!(l.line, "boom");
    assert_eq!(l.at.to_rfc3339(), "2026-11-26T10:00:00.123456789+00:00");
    let l = parse_log_line(LogStream::Stdout, "no timestamp here");
    assert_eq!(l.line, "no timestamp here");
}
