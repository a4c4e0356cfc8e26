//! Every spec the offline generator makes — from each OpenAPI fixture and
//! from plain words — renders into a server that passes the platform's own
//! checks: validation, the banned-pattern scan and `tsc --noEmit`.

use bmm_generator::{GenerateRequest, OfflineGenerator};
use bmm_spec::{ToolSpec, Toolchain, render, scan, write_tree};

const FIXTURES: &[(&str, &str)] = &[
    ("petstore.yaml", include_str!("../fixtures/petstore.yaml")),
    ("petstore-expanded.yaml", include_str!("../fixtures/petstore-expanded.yaml")),
    ("github-issues.yaml", include_str!("../fixtures/github-issues.yaml")),
    ("train-travel.yaml", include_str!("../fixtures/train-travel.yaml")),
];

/// Debug builds of the check path need more than the default 2 MiB test-thread stack.
fn on_big_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(16 * 1024 * 1024).spawn(f).unwrap().join().unwrap();
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

async fn assert_builds(label: &str, spec: &ToolSpec) {
    bmm_spec::validate(spec).unwrap_or_else(|e| panic!("{label}: {e}"));
    let rendered = render(spec);
    let findings = scan(&rendered);
    assert!(findings.is_empty(), "{label}: banned patterns {findings:?}");
    let dir = tempfile::tempdir().unwrap();
    write_tree(&rendered, dir.path()).unwrap();
    if let Err(e) = Toolchain::from_env().check(dir.path()).await {
        panic!("{label}: {e}");
    }
}

#[test]
fn imported_openapi_servers_type_check() {
    on_big_stack(|| block_on(imported_openapi_servers()));
}

async fn imported_openapi_servers() {
    let mut docs: Vec<(String, String)> = FIXTURES.iter().map(|(n, d)| (n.to_string(), d.to_string())).collect();
    docs.push((
        "petstore3.json".into(),
        include_str!("../fixtures/petstore3.json")
            .replace("\"url\": \"/api/v3\"", "\"url\": \"https://petstore3.swagger.io/api/v3\""),
    ));
    for (name, doc) in docs {
        let g = OfflineGenerator
            .generate_now(&GenerateRequest { openapi: Some(doc), ..Default::default() })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_builds(&name, &g.spec).await;
    }
}

#[test]
fn offline_text_utilities_type_check() {
    on_big_stack(|| block_on(offline_text_utilities()));
}

async fn offline_text_utilities() {
    let g = OfflineGenerator
        .generate_now(&GenerateRequest {
            description: "echo, word count, upper case, lower case, reverse text, current time, uuid, base64".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(g.spec.tools.len(), 9);
    assert_builds("text utilities", &g.spec).await;
}
