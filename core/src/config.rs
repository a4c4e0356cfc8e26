//! Configuration, read once at start from the environment (and optionally a
//! `bmm.toml`), validated with one message per problem.
//!
//! Every setting has an environment variable `BMM_<NAME>`; the same setting may
//! be given in `bmm.toml` as `<name> = "…"` (lower case). The environment wins.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::crypto::SecretBox;

/// One problem per entry, each naming the setting and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Which model provider generates specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorConfig {
    /// Deterministic, no network; the build log says so.
    Offline,
    /// Claude through the Anthropic Messages API.
    Anthropic { api_key: String, model: String, base_url: Url },
    /// Any OpenAI-compatible chat completions endpoint.
    OpenAi { api_key: Option<String>, model: String, base_url: Url },
}

impl GeneratorConfig {
    pub fn name(&self) -> &'static str {
        match self {
            GeneratorConfig::Offline => "offline",
            GeneratorConfig::Anthropic { .. } => "anthropic",
            GeneratorConfig::OpenAi { .. } => "openai-compatible",
        }
    }
}

/// How spans are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// How a deployed server gets its bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleDelivery {
    /// The runtime image runs the bundle from `<data dir>/bundles/`, mounted
    /// read-only (no image per bundle; the engine must see the data folder
    /// at the same path, as it already does for the JWKS file).
    Mount,
    /// An image per bundle: the runtime image plus the bundle as one layer.
    Image,
}

/// Which runtime backend runs the generated servers (`BMM_RUNTIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeBackend {
    /// One Docker engine (the dev default).
    Docker,
    /// Docker Swarm services over the nodes of a swarm.
    Swarm,
}

impl RuntimeBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeBackend::Docker => "docker",
            RuntimeBackend::Swarm => "swarm",
        }
    }
}

#[derive(Clone)]
pub struct Config {
    /// PostgreSQL URL.
    pub database_url: String,
    pub database_pool_size: usize,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// The public origin users and MCP clients reach the platform on, without a trailing slash.
    pub public_url: Url,
    pub temporal_address: Url,
    pub temporal_namespace: String,
    pub temporal_task_queue: String,
    /// Where the Temporal Web UI is, for links from the dashboard.
    pub temporal_ui_url: Url,
    /// Docker engine: `unix:///var/run/docker.sock` or `tcp://host:2376`.
    pub docker_host: String,
    /// The image generated servers run on: node and its libraries.
    pub runtime_image: String,
    /// Folder holding the node toolchain (`node_modules` with typescript, esbuild, the MCP SDK).
    pub toolchain_dir: PathBuf,
    /// Folder for the platform's own files (the published JWKS file, caches).
    pub data_dir: PathBuf,
    /// The master keys that encrypt secrets and signing keys at rest (the
    /// first seals); from `BMM_SECRET_KEY`, `_FILE` or `_COMMAND`.
    pub secret_box: SecretBox,
    pub generator: GeneratorConfig,
    /// OTLP endpoint for traces; none means tracing goes to logs only.
    pub otlp_endpoint: Option<Url>,
    /// `grpc` (default, port 4317) or `http/protobuf` (port 4318, path /v1/traces).
    pub otlp_protocol: OtlpProtocol,
    /// SMTP URL for magic links; none prints them to stdout (dev).
    pub smtp_url: Option<String>,
    pub mail_from: String,
    /// Bearer token for `/metrics` and the details of `/readyz` (they name
    /// every org's servers). Without one they are open in dev and closed otherwise.
    pub ops_token: Option<String>,
    /// Development mode: GraphiQL on, magic links printed.
    pub dev: bool,
    /// Host address the containers' published ports are reached on.
    pub container_host: String,
    /// Lifetime of OAuth access tokens.
    pub access_token_ttl: Duration,
    /// How long a signing key signs before a new one takes over.
    pub signing_key_rotation: Duration,
    /// Memory limit of a generated server's container, in MiB.
    pub container_memory_mib: i64,
    /// CPU limit of a generated server's container, in CPUs.
    pub container_cpus: f64,
    /// `mount` (default) or `image`.
    pub bundle_delivery: BundleDelivery,
    /// `docker` (default) or `swarm`.
    pub runtime: RuntimeBackend,
    /// Which platform's containers these are (label `bmm.platform`): the
    /// reconciler removes orphans only among its own, so platforms (and
    /// parallel test platforms) sharing one engine never reap each other's.
    /// `BMM_PLATFORM_ID`, else derived from the database (one database, one platform).
    pub platform_id: String,
    /// How often the reconciler compares what runs with what should.
    pub reconcile_interval: Duration,
    /// Workloads and images younger than this are never taken for orphans.
    pub orphan_grace: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line.
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("public_url", &self.public_url.as_str())
            .field("temporal_address", &self.temporal_address.as_str())
            .field("temporal_namespace", &self.temporal_namespace)
            .field("temporal_task_queue", &self.temporal_task_queue)
            .field("docker_host", &self.docker_host)
            .field("runtime_image", &self.runtime_image)
            .field("toolchain_dir", &self.toolchain_dir)
            .field("data_dir", &self.data_dir)
            .field("generator", &self.generator.name())
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

fn redact_url(u: &str) -> String {
    match Url::parse(u) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => u.to_owned(),
    }
}

/// The platform id of a database: its host, port and name (never the
/// password), hashed, so every process of one platform agrees without being told.
fn platform_id_of(database_url: &str) -> String {
    let key = match Url::parse(database_url) {
        Ok(u) => format!("{}:{}{}", u.host_str().unwrap_or(""), u.port().unwrap_or(5432), u.path()),
        Err(_) => database_url.to_owned(),
    };
    let digest = crate::digest::sha256(key.as_bytes());
    format!("p{}", &digest["sha256:".len().."sha256:".len() + 12])
}

/// Raw settings before validation: lower-case name → value.
pub type RawSettings = BTreeMap<String, String>;

impl Config {
    /// Read the process environment and, if present, the file named by
    /// `BMM_CONFIG` (default `./bmm.toml`).
    pub fn from_env() -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = std::env::var("BMM_CONFIG").unwrap_or_else(|_| "bmm.toml".into());
        let toml_text = match std::fs::read_to_string(&file) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError { problems: vec![format!("BMM_CONFIG: cannot read {file}: {e}")] });
            }
        };
        Self::from_sources(&env, toml_text.as_deref())
    }

    /// Build from explicit sources (tests use this).
    pub fn from_sources(env: &[(String, String)], toml_text: Option<&str>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut raw = RawSettings::new();
        if let Some(text) = toml_text {
            match text.parse::<toml::Table>() {
                Ok(table) => {
                    for (k, v) in table {
                        let s = match v {
                            toml::Value::String(s) => s,
                            toml::Value::Integer(i) => i.to_string(),
                            toml::Value::Float(f) => f.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            // A list of strings (the master keys) as one comma-separated value.
                            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                                items.iter().filter_map(toml::Value::as_str).collect::<Vec<_>>().join(",")
                            }
                            other => {
                                problems.push(format!(
                                    "bmm.toml: `{k}` must be a string, number or boolean, not {}",
                                    other.type_str()
                                ));
                                continue;
                            }
                        };
                        raw.insert(k.to_ascii_lowercase(), s);
                    }
                }
                Err(e) => problems.push(format!("bmm.toml: {}", e.message())),
            }
        }
        for (k, v) in env {
            if let Some(name) = k.strip_prefix("BMM_") {
                raw.insert(name.to_ascii_lowercase(), v.clone());
            }
        }
        // The Anthropic key keeps its conventional name.
        let anthropic_key =
            env.iter().find(|(k, _)| k == "ANTHROPIC_API_KEY").map(|(_, v)| v.clone()).filter(|v| !v.is_empty());

        let mut r = Reader { raw: &raw, problems: &mut problems };
        let dev = r.bool("dev", true);
        let listen = r.parse::<SocketAddr>("listen", "127.0.0.1:8080", "an address such as 127.0.0.1:8080");
        let public_url = r.url(
            "public_url",
            &format!("http://{}", listen.map(|l| l.to_string()).unwrap_or_else(|| "127.0.0.1:8080".into())),
        );
        let database_url = r.string("database_url", "postgres://bmm@127.0.0.1:55432/bmm");
        if let Some(db) = &database_url
            && !(db.starts_with("postgres://") || db.starts_with("postgresql://"))
        {
            r.problems.push(format!("BMM_DATABASE_URL: must start with postgres:// (got {})", redact_url(db)));
        }
        let database_pool_size = r.parse::<usize>("database_pool_size", "16", "a positive number");
        let temporal_address = r.url("temporal_address", "http://127.0.0.1:7233");
        let temporal_namespace = r.string("temporal_namespace", "default");
        let temporal_task_queue = r.string("temporal_task_queue", "bmm-builds");
        let temporal_ui_url = r.url("temporal_ui_url", "http://127.0.0.1:8233");
        let docker_host = r.string("docker_host", "unix:///var/run/docker.sock");
        if let Some(h) = &docker_host
            && !(h.starts_with("unix://")
                || h.starts_with("tcp://")
                || h.starts_with("http://")
                || h.starts_with("https://"))
        {
            r.problems.push(format!("BMM_DOCKER_HOST: must be unix://PATH or tcp://HOST:PORT (got {h})"));
        }
        let runtime_image = r.string("runtime_image", "bmm-runtime:node20");
        let home = r.string("home", ".bmm");
        let toolchain_dir = r.string("toolchain_dir", &format!("{}/toolchain", home.clone().unwrap_or_default()));
        let data_dir = r.string("data_dir", &format!("{}/data", home.clone().unwrap_or_default()));
        let secret_box = match crate::master_key::keyring(
            r.optional("secret_key").as_deref(),
            r.optional("secret_key_file").as_deref(),
            r.optional("secret_key_command").as_deref(),
            dev.unwrap_or(true),
        ) {
            Ok(b) => Some(b),
            Err(problem) => {
                r.problems.push(problem);
                None
            }
        };
        let otlp_endpoint = r.optional_url("otlp_endpoint");
        let otlp_protocol = match r.string("otlp_protocol", "grpc").as_deref() {
            Some("grpc") => Some(OtlpProtocol::Grpc),
            Some("http/protobuf") | Some("http") => Some(OtlpProtocol::HttpProtobuf),
            other => {
                r.problems
                    .push(format!("BMM_OTLP_PROTOCOL: must be grpc or http/protobuf (got {:?})", other.unwrap_or("")));
                None
            }
        };
        let smtp_url = r.optional("smtp_url");
        let ops_token = r.optional("ops_token");
        if ops_token.as_deref().is_some_and(|t| t.trim().len() < 16) {
            r.problems.push("BMM_OPS_TOKEN: must be at least 16 characters (`openssl rand -hex 16`)".into());
        }
        let mail_from = r.string("mail_from", "BuildMyMCP <login@localhost>");
        let container_host = r.string("container_host", "127.0.0.1");
        let access_token_ttl =
            r.parse::<u64>("access_token_ttl_secs", "900", "a number of seconds").map(Duration::from_secs);
        let signing_key_rotation =
            r.parse::<u64>("signing_key_rotation_secs", "604800", "a number of seconds").map(Duration::from_secs);
        let container_memory_mib = r.parse::<i64>("container_memory_mib", "256", "a number of MiB");
        let container_cpus = r.parse::<f64>("container_cpus", "0.5", "a number of CPUs such as 0.5");
        let bundle_delivery = match r.string("bundle_delivery", "mount").as_deref() {
            Some("mount") => Some(BundleDelivery::Mount),
            Some("image") => Some(BundleDelivery::Image),
            other => {
                r.problems.push(format!("BMM_BUNDLE_DELIVERY: must be mount or image (got {:?})", other.unwrap_or("")));
                None
            }
        };

        let runtime = match r.string("runtime", "docker").as_deref().map(str::trim) {
            Some("docker") => Some(RuntimeBackend::Docker),
            Some("swarm") => Some(RuntimeBackend::Swarm),
            other => {
                r.problems.push(format!("BMM_RUNTIME: must be docker or swarm (got {:?})", other.unwrap_or("")));
                None
            }
        };

        let platform_id = match r.optional("platform_id") {
            Some(id)
                if !id.is_empty() && id.len() <= 63 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                Some(id)
            }
            Some(id) => {
                r.problems.push(format!("BMM_PLATFORM_ID: must be 1 to 63 letters, digits or '-' (got {id:?})"));
                None
            }
            None => database_url.as_deref().map(platform_id_of),
        };
        let reconcile_interval = r
            .parse::<u64>("reconcile_interval_ms", "5000", "a number of milliseconds")
            .filter(|ms| {
                let ok = (100..=3_600_000).contains(ms);
                if !ok {
                    r.problems.push(format!("BMM_RECONCILE_INTERVAL_MS: must be between 100 and 3600000 (got {ms})"));
                }
                ok
            })
            .map(Duration::from_millis);
        let orphan_grace = r.parse::<u64>("orphan_grace_secs", "60", "a number of seconds").map(Duration::from_secs);

        let model_provider = r.string("generator", "auto");
        let anthropic_model = r.string("anthropic_model", "claude-opus-4-7");
        let anthropic_base = r.url("anthropic_base_url", "https://api.anthropic.com");
        let openai_base = r.optional_url("openai_base_url");
        let openai_model = r.string("openai_model", "gpt-4o-mini");
        let openai_key = r.optional("openai_api_key");
        let generator = match model_provider.as_deref().unwrap_or("auto") {
            "auto" => match (&anthropic_key, &openai_base) {
                (Some(k), _) => anthropic_base.clone().map(|b| GeneratorConfig::Anthropic {
                    api_key: k.clone(),
                    model: anthropic_model.clone().unwrap_or_default(),
                    base_url: b,
                }),
                (None, Some(b)) => Some(GeneratorConfig::OpenAi {
                    api_key: openai_key.clone(),
                    model: openai_model.clone().unwrap_or_default(),
                    base_url: b.clone(),
                }),
                (None, None) => Some(GeneratorConfig::Offline),
            },
            "offline" => Some(GeneratorConfig::Offline),
            "anthropic" => match anthropic_key {
                Some(k) => anthropic_base.map(|b| GeneratorConfig::Anthropic {
                    api_key: k,
                    model: anthropic_model.unwrap_or_default(),
                    base_url: b,
                }),
                None => {
                    r.problems.push("BMM_GENERATOR=anthropic needs ANTHROPIC_API_KEY".into());
                    None
                }
            },
            "openai" => match openai_base {
                Some(b) => Some(GeneratorConfig::OpenAi {
                    api_key: openai_key,
                    model: openai_model.unwrap_or_default(),
                    base_url: b,
                }),
                None => {
                    r.problems.push("BMM_GENERATOR=openai needs BMM_OPENAI_BASE_URL".into());
                    None
                }
            },
            other => {
                r.problems.push(format!("BMM_GENERATOR: must be auto, offline, anthropic or openai (got {other})"));
                None
            }
        };

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let mut public_url = public_url.expect("validated");
        // Keep the origin without a trailing slash so joined URLs are exact.
        let path = public_url.path().trim_end_matches('/').to_owned();
        public_url.set_path(&path);
        Ok(Config {
            database_url: database_url.expect("validated"),
            database_pool_size: database_pool_size.expect("validated"),
            listen: listen.expect("validated"),
            public_url,
            temporal_address: temporal_address.expect("validated"),
            temporal_namespace: temporal_namespace.expect("validated"),
            temporal_task_queue: temporal_task_queue.expect("validated"),
            temporal_ui_url: temporal_ui_url.expect("validated"),
            docker_host: docker_host.expect("validated"),
            runtime_image: runtime_image.expect("validated"),
            toolchain_dir: PathBuf::from(toolchain_dir.expect("validated")),
            data_dir: PathBuf::from(data_dir.expect("validated")),
            secret_box: secret_box.expect("validated"),
            generator: generator.expect("validated"),
            otlp_endpoint,
            otlp_protocol: otlp_protocol.expect("validated"),
            smtp_url,
            mail_from: mail_from.expect("validated"),
            ops_token,
            dev: dev.expect("validated"),
            container_host: container_host.expect("validated"),
            access_token_ttl: access_token_ttl.expect("validated"),
            signing_key_rotation: signing_key_rotation.expect("validated"),
            container_memory_mib: container_memory_mib.expect("validated"),
            container_cpus: container_cpus.expect("validated"),
            bundle_delivery: bundle_delivery.expect("validated"),
            runtime: runtime.expect("validated"),
            platform_id: platform_id.expect("validated"),
            reconcile_interval: reconcile_interval.expect("validated"),
            orphan_grace: orphan_grace.expect("validated"),
        })
    }

    /// The platform's issuer identifier: the public origin.
    pub fn issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The stable MCP URL of a server.
    pub fn server_url(&self, slug: &str) -> String {
        format!("{}/s/{slug}/mcp", self.issuer())
    }

    /// A link to a workflow in the Temporal Web UI.
    pub fn temporal_workflow_url(&self, workflow_id: &str) -> String {
        format!(
            "{}/namespaces/{}/workflows/{}",
            self.temporal_ui_url.as_str().trim_end_matches('/'),
            self.temporal_namespace,
            workflow_id
        )
    }

    /// A configuration for tests: dev defaults with the given database.
    pub fn for_tests(database_url: &str) -> Config {
        let env = vec![("BMM_DATABASE_URL".to_owned(), database_url.to_owned())];
        Config::from_sources(&env, None).expect("test config is valid")
    }
}

struct Reader<'a> {
    raw: &'a RawSettings,
    problems: &'a mut Vec<String>,
}

impl Reader<'_> {
    fn optional(&mut self, name: &str) -> Option<String> {
        self.raw.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    fn string(&mut self, name: &str, default: &str) -> Option<String> {
        Some(self.raw.get(name).cloned().unwrap_or_else(|| default.to_owned()))
    }

    fn parse<T: std::str::FromStr>(&mut self, name: &str, default: &str, what: &str) -> Option<T> {
        let v = self.raw.get(name).map(String::as_str).unwrap_or(default);
        match v.trim().parse::<T>() {
            Ok(t) => Some(t),
            Err(_) => {
                self.problems.push(format!("BMM_{}: must be {what} (got {v:?})", name.to_ascii_uppercase()));
                None
            }
        }
    }

    fn bool(&mut self, name: &str, default: bool) -> Option<bool> {
        match self.raw.get(name).map(|s| s.trim().to_ascii_lowercase()) {
            None => Some(default),
            Some(v) => match v.as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" | "" => Some(false),
                _ => {
                    self.problems.push(format!("BMM_{}: must be true or false (got {v:?})", name.to_ascii_uppercase()));
                    None
                }
            },
        }
    }

    fn url(&mut self, name: &str, default: &str) -> Option<Url> {
        let v = self.raw.get(name).map(String::as_str).unwrap_or(default);
        self.check_url(name, v)
    }

    fn optional_url(&mut self, name: &str) -> Option<Url> {
        let v = self.optional(name)?;
        self.check_url(name, &v)
    }

    fn check_url(&mut self, name: &str, v: &str) -> Option<Url> {
        match Url::parse(v) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Some(u),
            Ok(_) => {
                self.problems.push(format!("BMM_{}: must be an http(s) URL (got {v:?})", name.to_ascii_uppercase()));
                None
            }
            Err(e) => {
                self.problems.push(format!("BMM_{}: not a URL ({e}): {v:?}", name.to_ascii_uppercase()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_in_dev() {
        let c = Config::from_sources(&[], None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer(), "http://127.0.0.1:8080");
        assert_eq!(c.server_url("wx"), "http://127.0.0.1:8080/s/wx/mcp");
        assert_eq!(c.generator, GeneratorConfig::Offline);
        assert_eq!(c.bundle_delivery, BundleDelivery::Mount);
        assert!(c.dev);
        let c = Config::from_sources(&env(&[("BMM_BUNDLE_DELIVERY", "image")]), None).unwrap();
        assert_eq!(c.bundle_delivery, BundleDelivery::Image);
        assert_eq!(c.runtime, RuntimeBackend::Docker);
        let c = Config::from_sources(&env(&[("BMM_RUNTIME", "swarm")]), None).unwrap();
        assert_eq!(c.runtime, RuntimeBackend::Swarm);
    }

    #[test]
    fn the_platform_id_follows_the_database_unless_set() {
        let id = |pairs: &[(&str, &str)]| Config::from_sources(&env(pairs), None).unwrap().platform_id;
        let a = id(&[("BMM_DATABASE_URL", "postgres://bmm:one@127.0.0.1:55432/a")]);
        assert_eq!(
            a,
            id(&[("BMM_DATABASE_URL", "postgres://bmm:other@127.0.0.1:55432/a")]),
            "the password is no part of it"
        );
        assert_ne!(a, id(&[("BMM_DATABASE_URL", "postgres://bmm@127.0.0.1:55432/b")]));
        assert_eq!(id(&[("BMM_PLATFORM_ID", "prod-eu")]), "prod-eu");
        let e = Config::from_sources(&env(&[("BMM_PLATFORM_ID", "a b"), ("BMM_RECONCILE_INTERVAL_MS", "5")]), None)
            .unwrap_err();
        assert!(e.problems.iter().any(|p| p.starts_with("BMM_PLATFORM_ID")), "{e}");
        assert!(e.problems.iter().any(|p| p.starts_with("BMM_RECONCILE_INTERVAL_MS")), "{e}");
    }

    #[test]
    fn every_problem_is_reported_once_with_its_name() {
        let e = Config::from_sources(
            &env(&[
                ("BMM_LISTEN", "nonsense"),
                ("BMM_PUBLIC_URL", "ftp://x"),
                ("BMM_DEV", "maybe"),
                ("BMM_DATABASE_URL", "mysql://x"),
                ("BMM_CONTAINER_CPUS", "lots"),
                ("BMM_GENERATOR", "gpt"),
                ("BMM_BUNDLE_DELIVERY", "ftp"),
                ("BMM_RUNTIME", "kubernetes"),
            ]),
            None,
        )
        .unwrap_err();
        let text = e.to_string();
        for name in [
            "BMM_LISTEN",
            "BMM_PUBLIC_URL",
            "BMM_DEV",
            "BMM_DATABASE_URL",
            "BMM_CONTAINER_CPUS",
            "BMM_GENERATOR",
            "BMM_BUNDLE_DELIVERY",
            "BMM_RUNTIME",
        ] {
            assert_eq!(e.problems.iter().filter(|p| p.starts_with(name)).count(), 1, "{name} in {text}");
        }
    }

    #[test]
    fn production_needs_a_secret_key() {
        let e = Config::from_sources(&env(&[("BMM_DEV", "false")]), None).unwrap_err();
        assert!(e.problems[0].starts_with("BMM_SECRET_KEY"), "{e}");
        let e = Config::from_sources(&env(&[("BMM_DEV", "false"), ("BMM_SECRET_KEY", "abcd")]), None).unwrap_err();
        assert!(e.problems[0].contains("64 hex"), "{e}");
        let ok = Config::from_sources(&env(&[("BMM_DEV", "false"), ("BMM_SECRET_KEY", &"ab".repeat(32))]), None);
        assert!(ok.is_ok());
    }

    #[test]
    fn master_keys_as_a_toml_list_the_first_current() {
        let toml = format!("dev = false\nsecret_key = [\"{}\", \"{}\"]\n", "ab".repeat(32), "cd".repeat(32));
        let c = Config::from_sources(&[], Some(&toml)).unwrap();
        let ids = c.secret_box.key_ids();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], SecretBox::from_hex(&"ab".repeat(32)).unwrap().key_id);
        let e = Config::from_sources(&[], Some("secret_key = [1, 2]\n")).unwrap_err();
        assert!(e.problems[0].contains("`secret_key` must be a string"), "{e}");
    }

    #[test]
    fn toml_file_is_read_and_env_wins() {
        let c = Config::from_sources(
            &env(&[("BMM_TEMPORAL_NAMESPACE", "prod")]),
            Some("temporal_namespace = \"x\"\ndatabase_pool_size = 3\n"),
        )
        .unwrap();
        assert_eq!(c.temporal_namespace, "prod");
        assert_eq!(c.database_pool_size, 3);
        let e = Config::from_sources(&[], Some("this is = = not toml")).unwrap_err();
        assert!(e.problems[0].starts_with("bmm.toml"));
    }

    #[test]
    fn anthropic_key_selects_claude() {
        let c = Config::from_sources(&env(&[("ANTHROPIC_API_KEY", "sk-test")]), None).unwrap();
        assert_eq!(c.generator.name(), "anthropic");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-test"));
    }
}
