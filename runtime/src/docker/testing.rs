//! Helpers for tests that deploy real containers: the hand-written test server
//! bundle, a deploy spec for it, and a guard that removes what a test made.

use std::path::PathBuf;

use uuid::Uuid;

use super::{DeploySpec, Docker};

/// A tiny ESM server: `/healthz` and a minimal MCP endpoint (see the file).
pub const TEST_SERVER: &[u8] = include_bytes!("test_server.mjs");

pub fn config() -> bmm_core::Config {
    let mut cfg = bmm_core::Config::for_tests("postgres://bmm@127.0.0.1:55432/unused");
    if let Ok(image) = std::env::var("BMM_RUNTIME_IMAGE") {
        cfg.runtime_image = image;
    }
    // The image path (one image per bundle); mount mode has a test of its own.
    cfg.bundle_delivery = bmm_core::config::BundleDelivery::Image;
    cfg
}

pub fn docker() -> Docker {
    Docker::connect(&config()).expect("docker settings")
}

/// A fresh build of the test server: its own ids, slug and JWKS folder.
pub fn spec(bundle: &[u8], env: &[(&str, &str)]) -> (DeploySpec, tempfile::TempDir) {
    let jwks = tempfile::tempdir().expect("jwks dir");
    std::fs::write(jwks.path().join("jwks.json"), br#"{"keys":[]}"#).expect("jwks file");
    // Readable by the container's user, like the platform's data folder.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(jwks.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let build_id = Uuid::new_v4();
    let spec = DeploySpec {
        org_id: Uuid::new_v4(),
        server_id: Uuid::new_v4(),
        build_id,
        version: 1,
        slug: format!("t-{}", &build_id.simple().to_string()[..10]),
        bundle: bundle.to_vec(),
        bundle_digest: bmm_core::digest::sha256(bundle),
        env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        jwks_dir: PathBuf::from(jwks.path()),
    };
    (spec, jwks)
}

/// Removes the build's containers when dropped, even when the test panics.
pub struct Cleanup(pub Uuid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let build = self.0;
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async { docker().remove_build(build).await })
        })
        .join();
    }
}
