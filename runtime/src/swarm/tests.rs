use super::*;

#[test]
fn service_names_fit_one_dns_label_and_keep_the_build() {
    let short = "bmm-weather-v3-0123456789ab";
    assert_eq!(service_name(short), short);
    let slug = "a".repeat(48);
    let long = format!("bmm-{slug}-v12-0123456789ab");
    assert!(long.len() > MAX_SERVICE_NAME);
    let s = service_name(&long);
    assert_eq!(s.len(), MAX_SERVICE_NAME);
    assert!(s.ends_with("-v12-0123456789ab"), "{s}");
    assert!(s.starts_with("bmm-aaaa"), "{s}");
    // A cut that lands after a dash does not leave two.
    let dashed = format!("bmm-{}-b{}-v1-0123456789ab", "x".repeat(44), "y".repeat(10));
    assert!(!service_name(&dashed).contains("--"), "{}", service_name(&dashed));
}

#[test]
fn an_edge_names_its_service_and_back() {
    let service = service_name(&format!("bmm-{}-v2-0123456789ab", "s".repeat(48)));
    let edge = edge_name(&service);
    assert!(edge.starts_with("bmm-edge-"), "{edge}");
    assert_eq!(edge_service(&edge), service);
}

// ---- against a private engine in swarm mode (testing.rs) ----

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use futures::StreamExt;

use super::testing::PrivateSwarm;
use crate::docker::testing::{TEST_SERVER, spec};

fn shared_host() -> String {
    crate::docker::testing::config().docker_host
}

/// A swarm backend on the private engine; bundles mounted from its own folder.
fn swarm_on(engine: &PrivateSwarm) -> Swarm {
    let mut cfg = crate::docker::testing::config();
    cfg.docker_host = engine.host.clone();
    cfg.bundle_delivery = bmm_core::config::BundleDelivery::Mount;
    cfg.data_dir = engine.data_dir().join("bmm");
    Swarm::connect(&cfg).expect("swarm settings")
}

async fn healthz(endpoint: &Endpoint) -> Result<u16, String> {
    let url = format!("http://{}:{}/healthz", endpoint.host, endpoint.port);
    match reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap().get(&url).send().await
    {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

/// The container of the service's task that runs now.
async fn running_task_container(sw: &Swarm, service: &str) -> Option<String> {
    let c = sw.client().await.unwrap();
    sw.tasks(&c, service).await.unwrap().into_iter().find_map(|t| {
        let running = t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING);
        running.then(|| t.status.and_then(|s| s.container_status).and_then(|s| s.container_id)).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_service_runs_hardened_restarts_where_it_died_and_is_removed() {
    let engine = PrivateSwarm::start(&shared_host(), &crate::docker::testing::config().runtime_image);
    let sw = swarm_on(&engine);
    sw.ping().await.expect("a manager of an active swarm");
    let (spec, _jwks) = spec(TEST_SERVER, &[("API_TOKEN", "s3cret-value")]);

    let deployed = sw.deploy(&spec).await.expect("deploy");
    assert!(!deployed.adopted);
    let name = crate::container_name(&spec.slug, 1, spec.build_id);
    assert_eq!(deployed.name, name);
    let endpoint = deployed.endpoint();
    assert_eq!(endpoint.host, "127.0.0.1");
    assert_eq!(healthz(&endpoint).await, Ok(200));

    // The service, as the swarm holds it.
    let service = service_name(&name);
    let c = sw.client().await.unwrap();
    let found = sw.inspect_service(&c, &service).await.unwrap().expect("the service");
    let sspec = found.spec.clone().unwrap();
    let labels = sspec.labels.clone().unwrap();
    assert_eq!(labels["bmm.server"], spec.server_id.to_string());
    assert_eq!(labels["bmm.build"], spec.build_id.to_string());
    assert_eq!(labels["bmm.bundle"], spec.bundle_digest);
    assert_eq!(labels[MANAGED_LABEL], "true");
    assert_eq!(sspec.endpoint_spec.as_ref().and_then(|e| e.ports.clone()).unwrap_or_default(), vec![]);
    let task = sspec.task_template.clone().unwrap();
    assert_eq!(task.restart_policy.unwrap().condition, Some(TaskSpecRestartPolicyConditionEnum::ANY));
    let limits = task.resources.unwrap().limits.unwrap();
    assert_eq!(limits.pids, Some(PIDS_LIMIT));

    // Its task's container, as the engine runs it.
    let task_container = running_task_container(&sw, &service).await.expect("a running task");
    let info = c.inspect_container(&task_container, None::<InspectContainerOptions>).await.unwrap();
    let hc = info.host_config.clone().unwrap();
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_ne!(hc.privileged, Some(true));
    assert_eq!(hc.memory, Some(crate::docker::testing::config().container_memory_mib * 1024 * 1024));
    assert_eq!(hc.pids_limit, Some(PIDS_LIMIT));
    assert!(hc.port_bindings.unwrap_or_default().is_empty(), "a task publishes nothing");
    assert_eq!(info.config.as_ref().unwrap().user.as_deref(), Some("10001:10001"));
    assert!(
        !info.config.as_ref().unwrap().labels.clone().unwrap_or_default().contains_key(MANAGED_LABEL),
        "a task container must not look like a docker-backend container"
    );
    // Alone on one internal network: no route out, no other server beside it.
    let nets = info.network_settings.unwrap().networks.unwrap();
    assert_eq!(nets.keys().collect::<Vec<_>>(), vec![&service], "{nets:?}");
    let net = engine.docker(&["network", "inspect", &service, "--format", "{{.Internal}} {{.Driver}} {{.Scope}}"]);
    assert_eq!(net.trim(), "true overlay swarm");
    // The image has node and little else.
    let read_routes = "process.stdout.write(require('fs').readFileSync('/proc/net/route', 'utf8'))";
    let routes = engine.docker(&["exec", &task_container, "/usr/bin/node", "-e", read_routes]);
    assert!(routes.lines().count() > 1, "the task has its overlay route: {routes}");
    assert!(
        !routes.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "the task has no default route: {routes}"
    );
    // /tmp is Docker's tmpfs default: noexec, nosuid, nodev.
    let read = |path: &str| format!("process.stdout.write(require('fs').readFileSync('{path}', 'utf8'))");
    let mounts = engine.docker(&["exec", &task_container, "/usr/bin/node", "-e", &read("/proc/mounts")]);
    let tmp = mounts.lines().find(|l| l.split_whitespace().nth(1) == Some("/tmp")).expect("a /tmp mount");
    for opt in ["noexec", "nosuid", "nodev", "size=65536k"] {
        assert!(tmp.contains(opt), "{opt} on /tmp: {tmp}");
    }
    // no-new-privileges is applied where the engine honours it for services
    // (API 1.46+); docs/operations.md says what to set on older engines.
    let status = engine.docker(&["exec", &task_container, "/usr/bin/node", "-e", &read("/proc/self/status")]);
    let nnp = status.lines().find_map(|l| l.strip_prefix("NoNewPrivs:")).map(str::trim);
    let honoured = sw.engine_at_least(&c, NO_NEW_PRIVILEGES_API).await;
    assert_eq!(nnp, Some(if honoured { "1" } else { "0" }), "{status}");
    // The edge: loopback only, on the edges' bridge and the service's network.
    let edge = c.inspect_container(&edge_name(&service), None::<InspectContainerOptions>).await.unwrap();
    let bound = edge.host_config.clone().unwrap().port_bindings.unwrap();
    let binding = &bound[&format!("{CONTAINER_PORT}/tcp")].clone().unwrap()[0];
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    let mut edge_nets: Vec<String> = edge.network_settings.unwrap().networks.unwrap().into_keys().collect();
    edge_nets.sort();
    assert_eq!(edge_nets, vec![EDGE_NETWORK.to_owned(), service.clone()]);
    assert_eq!(edge.host_config.unwrap().cap_drop, Some(vec!["ALL".to_owned()]));

    // The same deploy again adopts the service.
    let again = sw.deploy(&spec).await.expect("redeploy");
    assert!(again.adopted);
    assert_eq!(again.endpoint(), endpoint);

    // Kill the task's container: the swarm starts another, reached at the same endpoint.
    engine.docker(&["kill", &task_container]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let replacement = loop {
        if let Some(id) = running_task_container(&sw, &service).await
            && id != task_container
            && healthz(&endpoint).await == Ok(200)
        {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no new task answered within 60s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(replacement, task_container);
    let listed = sw.list(&ListFilter::server(spec.server_id)).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, name);
    assert!(listed[0].running);
    assert_eq!(listed[0].endpoint.as_ref(), Some(&endpoint));
    assert_eq!(listed[0].bundle_digest.as_deref(), Some(spec.bundle_digest.as_str()));

    // Logs come from the running task's container.
    let lines: Vec<_> = sw.logs(&name, 50, false).collect().await;
    assert!(lines.iter().all(Result::is_ok), "{lines:?}");

    // Stop: no task runs, the workload says so, and a deploy brings it back.
    sw.stop(&name, Duration::from_secs(2)).await.expect("stop");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let w = sw.adopt(&name).await.unwrap().expect("still there");
        if !w.running {
            assert_eq!(w.state, "stopped");
            assert_eq!(w.endpoint, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the service did not stop");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sw.deploy(&spec).await.expect("deploy after stop").adopted);
    assert_eq!(healthz(&endpoint).await, Ok(200));

    // Remove: service, edge and network go; what the reconciler reads says so.
    assert_eq!(sw.remove_build(spec.build_id).await.unwrap(), 1);
    assert_eq!(sw.adopt(&name).await.unwrap(), None);
    assert!(sw.list(&ListFilter::server(spec.server_id)).await.unwrap().is_empty());
    // `remove` waits until the node forgot the network too.
    if let Ok(left) = engine.try_docker(&["network", "inspect", &service]) {
        panic!("the network was left behind: {left}");
    }
    assert!(engine.try_docker(&["inspect", &edge_name(&service)]).is_err(), "the edge was left behind");
    assert!(healthz(&endpoint).await.is_err(), "nothing answers at the old endpoint");
    // Removing what is gone is fine.
    sw.remove(&name).await.expect("remove again");

    // The reconciler's remedy for a removed service: the same deploy makes it again.
    let back = sw.deploy(&spec).await.expect("deploy again");
    assert!(!back.adopted);
    assert_eq!(healthz(&back.endpoint()).await, Ok(200));

    // A service removed by hand leaves its edge: reported as missing, and
    // removing the build takes the edge and the network too.
    engine.docker(&["service", "rm", &service]);
    let left = sw.list(&ListFilter { build_id: Some(spec.build_id), ..Default::default() }).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].state.as_str(), left[0].running), ("missing", false));
    assert_eq!(left[0].name, name);
    assert_eq!(sw.remove_build(spec.build_id).await.unwrap(), 1);
    assert!(engine.try_docker(&["inspect", &edge_name(&service)]).is_err(), "the stranded edge was left behind");
    if let Ok(net) = engine.try_docker(&["network", "inspect", &service]) {
        panic!("the stranded network was left behind: {net}");
    }
    assert!(sw.list(&ListFilter::server(spec.server_id)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_server_failing_at_start_fails_with_its_logs_and_leaves_nothing() {
    let engine = PrivateSwarm::start(&shared_host(), &crate::docker::testing::config().runtime_image);
    let sw = swarm_on(&engine);
    let (crash, _jwks) = spec(TEST_SERVER, &[("TEST_CRASH", "1")]);
    let err = sw.deploy(&crash).await.expect_err("a crashing server");
    let RuntimeError::Failed(msg) = &err else { panic!("expected Failed, got {err:?}") };
    assert!(msg.contains("exited at start with code 3"), "{msg}");
    assert!(msg.contains("fatal: TEST_CRASH is set"), "{msg}");
    let name = crate::container_name(&crash.slug, 1, crash.build_id);
    assert_eq!(sw.adopt(&name).await.unwrap(), None, "the failed service was removed");
    if let Ok(left) = engine.try_docker(&["network", "inspect", &service_name(&name)]) {
        panic!("the failed service's network was left behind: {left}");
    }

    // Bad requests are refused before the engine is asked.
    let (mut bad, _jwks) = spec(TEST_SERVER, &[]);
    bad.slug = "Bad Slug".into();
    assert!(matches!(sw.deploy(&bad).await, Err(RuntimeError::BadRequest(_))));
}

/// The shared engine is no swarm (and must not become one): the backend says
/// what to do instead of deploying. Only reads the engine's state.
#[tokio::test]
async fn swarm_backend_on_an_engine_outside_a_swarm_says_how_to_make_one() {
    let mut cfg = crate::docker::testing::config();
    cfg.runtime = bmm_core::config::RuntimeBackend::Swarm;
    let sw = Swarm::connect(&cfg).unwrap();
    let err = sw.ping().await.expect_err("the shared engine is not a swarm manager");
    assert!(err.to_string().contains("scripts/stack.sh swarm"), "{err}");
    let (spec, _jwks) = spec(TEST_SERVER, &[]);
    let err = sw.deploy(&spec).await.expect_err("no deploy outside a swarm");
    assert!(err.to_string().contains("not part of a swarm"), "{err}");
    assert!(!err.is_retryable());
    // And an engine that is not there is unavailable, as for the docker backend.
    cfg.docker_host = "unix:///tmp/bmm-no-such-docker.sock".into();
    let err = Swarm::connect(&cfg).unwrap().ping().await.expect_err("no engine");
    assert!(err.is_retryable(), "{err:?}");
}
