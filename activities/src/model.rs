//! The small serde values that travel between the workflow and its
//! activities. They go into Temporal's history, so they carry ids and digests,
//! never sources, bundles or secrets.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the API hands the build workflow (see docs/ARCHITECTURE.md, "Builds").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInput {
    pub build_id: Uuid,
    pub org_id: Uuid,
    pub server_id: Uuid,
    pub version_id: Uuid,
    pub version: i32,
    pub slug: String,
    pub preview_id: Option<Uuid>,
}

impl BuildInput {
    /// The Temporal workflow id of this build.
    pub fn workflow_id(&self) -> String {
        workflow_id(self.build_id)
    }

    /// The name of the container this build deploys (see [`bmm_runtime::container_name`]).
    pub fn container_name(&self) -> String {
        bmm_runtime::container_name(&self.slug, self.version, self.build_id)
    }
}

/// `build-<build id>`, the one workflow id of a build.
pub fn workflow_id(build_id: Uuid) -> String {
    format!("build-{build_id}")
}

/// The steps of a build, in order, as named in events and `builds.current_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Generate,
    Check,
    Bundle,
    Deploy,
    Smoke,
    Cutover,
}

impl Step {
    pub const ALL: [Step; 6] = [Step::Generate, Step::Check, Step::Bundle, Step::Deploy, Step::Smoke, Step::Cutover];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Generate => "generate",
            Step::Check => "check",
            Step::Bundle => "bundle",
            Step::Deploy => "deploy",
            Step::Smoke => "smoke",
            Step::Cutover => "cutover",
        }
    }

    /// Whether this step leaves something running that a failure must remove.
    pub fn deploys(self) -> bool {
        matches!(self, Step::Deploy | Step::Smoke | Step::Cutover)
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output of `generate`: the validated spec is on the version row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRef {
    pub spec_digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckInput {
    pub build: BuildInput,
    pub spec_digest: String,
}

/// Output of `check`: the rendered source in `blobs`, and the spec it came
/// from (a repair by the generator may have replaced the one generated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub spec_digest: String,
    pub source_digest: String,
}

/// What to bundle: the checked source (after `check`), or the spec itself
/// (alongside `check`, which then vouches for the same source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInput {
    pub build: BuildInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_digest: Option<String>,
}

/// Output of `bundle`: one ESM file in `blobs`, and the source it was made
/// from (empty in histories written before bundles said so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub bundle_digest: String,
    #[serde(default)]
    pub source_digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployInput {
    pub build: BuildInput,
    pub bundle_digest: String,
}

/// A container this build started, as the `deployments` row records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub deployment_id: Uuid,
    pub container_name: String,
    pub container_id: String,
    pub host: String,
    pub port: u16,
}

impl Deployed {
    /// Where the container's MCP endpoint answers, directly (not through the gateway).
    pub fn mcp_url(&self) -> String {
        format!("http://{}:{}/mcp", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedInput {
    pub build: BuildInput,
    pub deployed: Deployed,
}

/// Output of `cutover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// The server's stable MCP URL.
    pub url: String,
}

/// How a build that did not succeed ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// A step failed for good; `cause` is in plain words.
    Failed { step: Step, cause: String },
    /// Someone cancelled the build.
    Cancelled { reason: Option<String>, step: Option<Step> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbandonInput {
    pub build: BuildInput,
    pub ending: Ending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_contract() {
        let b = BuildInput {
            build_id: Uuid::parse_str("0193a7c2-1111-7000-8000-00000000beef").unwrap(),
            org_id: Uuid::nil(),
            server_id: Uuid::nil(),
            version_id: Uuid::nil(),
            version: 3,
            slug: "weather".into(),
            preview_id: None,
        };
        assert_eq!(b.container_name(), "bmm-weather-v3-00000000beef");
        assert_eq!(b.workflow_id(), "build-0193a7c2-1111-7000-8000-00000000beef");
    }

    #[test]
    fn steps_serialise_as_their_event_names() {
        for s in Step::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
    }
}
