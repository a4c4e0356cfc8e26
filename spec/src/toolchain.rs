//! Runs the node toolchain (installed from `runner-template/package-lock.json`
//! by `scripts/stack.sh toolchain`) over a rendered tree on disk:
//! `tsc --noEmit` (TypeScript 7, the native compiler) and `esbuild`.
//!
//! Processes run in their own process group with a timeout; on timeout the
//! whole group is killed. Both use the binaries under the toolchain's
//! `node_modules` directly, so nothing is fetched from the network.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::render::{ENTRY, Rendered};

/// What the toolchain must contain, relative to its directory.
const NODE_MODULES: &str = "node_modules";
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_BUNDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Output beyond this is cut (a runaway compiler must not fill memory).
const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;
const MAX_DIAGNOSTICS: usize = 200;

/// One compiler message, with the path relative to the rendered tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub col: u32,
    /// `TS2322: Type 'string' is not assignable to type 'number'.`
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// The tree does not type-check. This is the user's (or the generator's) code, not a toolchain fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("type check failed with {} error(s): {}", diagnostics.len(), diagnostics.first().map(|d| d.to_string()).unwrap_or_default())]
pub struct CheckFailure {
    pub diagnostics: Vec<Diagnostic>,
}

/// The toolchain itself could not do its job; retrying may help, the spec is not at fault.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("the node toolchain is missing at {0} (run scripts/stack.sh toolchain)")]
    Missing(PathBuf),
    #[error("{tool} did not finish within {seconds} s")]
    Timeout { tool: &'static str, seconds: u64 },
    #[error("could not run {tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed (exit {code:?}): {output}")]
    Failed { tool: &'static str, code: Option<i32>, output: String },
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`Toolchain::check`] can end in besides success.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Failed(#[from] CheckFailure),
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
}

/// The installed node toolchain.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub dir: PathBuf,
    pub check_timeout: Duration,
    pub bundle_timeout: Duration,
}

/// Write a rendered tree to `dir` (see [`Rendered::write_to`]).
pub fn write_tree(rendered: &Rendered, dir: &Path) -> Result<(), ToolchainError> {
    rendered.write_to(dir).map_err(|source| ToolchainError::Io { path: dir.to_path_buf(), source })
}

struct Output {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Toolchain {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), check_timeout: DEFAULT_CHECK_TIMEOUT, bundle_timeout: DEFAULT_BUNDLE_TIMEOUT }
    }

    /// `$BMM_TOOLCHAIN_DIR`, else `.bmm/toolchain` of the checkout this crate was built from.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("BMM_TOOLCHAIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.bmm/toolchain"));
        Self::new(dir)
    }

    fn node_modules(&self) -> Result<PathBuf, ToolchainError> {
        let nm = self.dir.join(NODE_MODULES);
        if nm.is_dir() { Ok(nm) } else { Err(ToolchainError::Missing(self.dir.clone())) }
    }

    /// The native compiler of TypeScript 7 for this platform, or the package's
    /// node launcher (which spawns the same binary) when it is not found.
    fn tsc(&self, nm: &Path) -> Result<(PathBuf, Vec<String>), ToolchainError> {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x64",
            "aarch64" => "arm64",
            other => other,
        };
        let native = nm.join(format!("@typescript/typescript-{os}-{arch}/lib/tsc"));
        if native.is_file() {
            return Ok((native, vec![]));
        }
        let launcher = nm.join("typescript/bin/tsc");
        if launcher.is_file() {
            return Ok((PathBuf::from("node"), vec![launcher.to_string_lossy().into_owned()]));
        }
        Err(ToolchainError::Missing(self.dir.clone()))
    }

    fn esbuild(&self, nm: &Path) -> Result<PathBuf, ToolchainError> {
        let bin = nm.join("esbuild/bin/esbuild");
        if bin.is_file() { Ok(bin) } else { Err(ToolchainError::Missing(self.dir.clone())) }
    }

    /// Make the tree's `node_modules` point at the toolchain's, so module
    /// resolution finds the pinned packages without copying them.
    fn link_modules(&self, tree: &Path, nm: &Path) -> Result<(), ToolchainError> {
        let link = tree.join(NODE_MODULES);
        let io = |source| ToolchainError::Io { path: link.clone(), source };
        let target = std::fs::canonicalize(nm).map_err(io)?;
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(()),
            Ok(_) => std::fs::remove_file(&link).map_err(io)?,
            Err(_) if link.exists() => return Ok(()), // a real directory the caller put there
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link).map_err(io)
    }

    /// Everything `check` and `bundle` need is on disk (for `bmm doctor` and start-up checks).
    pub fn ensure_installed(&self) -> Result<(), ToolchainError> {
        let nm = self.node_modules()?;
        self.tsc(&nm)?;
        self.esbuild(&nm)?;
        for package in ["@modelcontextprotocol/sdk", "jose", "ajv", "ajv-formats", "@types/node"] {
            if !nm.join(package).join("package.json").is_file() {
                return Err(ToolchainError::Missing(self.dir.clone()));
            }
        }
        Ok(())
    }

    /// `tsc --noEmit -p <tree>`: `Ok(())` when the tree type-checks.
    pub async fn check(&self, tree: &Path) -> Result<(), CheckError> {
        let nm = self.node_modules()?;
        let (program, mut args) = self.tsc(&nm)?;
        self.link_modules(tree, &nm)?;
        args.extend(["--noEmit", "--pretty", "false", "-p", "tsconfig.json"].map(String::from));
        let out = run("tsc", &program, &args, tree, self.check_timeout).await?;
        if out.code == Some(0) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let diagnostics = parse_diagnostics(&text);
        if diagnostics.is_empty() {
            // A non-zero exit without diagnostics is the compiler failing, not the code.
            return Err(ToolchainError::Failed { tool: "tsc", code: out.code, output: tail(&text) }.into());
        }
        Err(CheckFailure { diagnostics }.into())
    }

    /// esbuild `src/server.ts` into one ESM file for node 20 with every
    /// dependency inlined. Deterministic: paths in the output are relative to
    /// the tree (symlinks preserved), there are no timestamps, so the same tree
    /// gives the same bytes wherever it is on disk.
    pub async fn bundle(&self, tree: &Path) -> Result<Vec<u8>, ToolchainError> {
        self.bundle_entry(tree, ENTRY).await
    }

    /// [`Toolchain::bundle`] from another entry point of the tree (relative path), e.g. a test harness.
    pub async fn bundle_entry(&self, tree: &Path, entry: &str) -> Result<Vec<u8>, ToolchainError> {
        if entry.starts_with('-') || Path::new(entry).is_absolute() {
            // Never let an entry be read as an esbuild flag or escape the tree.
            return Err(ToolchainError::Failed { tool: "esbuild", code: None, output: format!("bad entry {entry}") });
        }
        let nm = self.node_modules()?;
        let esbuild = self.esbuild(&nm)?;
        self.link_modules(tree, &nm)?;
        let args: Vec<String> = [
            entry,
            "--bundle",
            "--platform=node",
            "--target=node20",
            "--format=esm",
            "--preserve-symlinks",
            "--legal-comments=none",
            "--charset=utf8",
            "--log-level=error",
            // CommonJS dependencies call require() for node built-ins; ESM has no require.
            "--banner:js=import { createRequire as __bmmCreateRequire } from 'node:module'; \
             const require = __bmmCreateRequire(import.meta.url);",
        ]
        .map(String::from)
        .to_vec();
        let out = run("esbuild", &esbuild, &args, tree, self.bundle_timeout).await?;
        if out.code != Some(0) || out.stdout.is_empty() {
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(ToolchainError::Failed { tool: "esbuild", code: out.code, output: tail(&text) });
        }
        Ok(out.stdout)
    }
}

fn tail(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().rev().nth(4000) {
        Some((cut, _)) => format!("…{}", &t[cut..]),
        None => t.to_string(),
    }
}

async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        // Keep draining past the cap so the child never blocks on a full pipe.
        if out.len() < MAX_OUTPUT_BYTES {
            out.extend_from_slice(&buf[..n.min(MAX_OUTPUT_BYTES - out.len())]);
        }
    }
}

async fn run(
    tool: &'static str,
    program: &Path,
    args: &[String],
    cwd: &Path,
    timeout: Duration,
) -> Result<Output, ToolchainError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ToolchainError::Spawn { tool, source })?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let work = async {
        let (out, err, status) = tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
        let spawn = |source| ToolchainError::Spawn { tool, source };
        Ok::<_, ToolchainError>(Output {
            code: status.map_err(spawn)?.code(),
            stdout: out.map_err(spawn)?,
            stderr: err.map_err(spawn)?,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the process group we created for this child; no memory is touched.
                unsafe {
                    libc::kill(-(pid as i32), libc::SIGKILL);
                }
            }
            Err(ToolchainError::Timeout { tool, seconds: timeout.as_secs() })
        }
    }
}

/// `src/tools/x.ts(7,3): error TS2322: message` (tsc's `--pretty false` format);
/// indented lines continue the previous message.
pub fn parse_diagnostics(text: &str) -> Vec<Diagnostic> {
    static LINE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$").expect("diagnostic regex"));
    static GLOBAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^error (TS\d+): (.*)$").expect("global regex"));
    let mut out: Vec<Diagnostic> = Vec::new();
    for line in text.lines() {
        if let Some(c) = LINE.captures(line) {
            out.push(Diagnostic {
                file: c[1].replace('\\', "/"),
                line: c[2].parse().unwrap_or(0),
                col: c[3].parse().unwrap_or(0),
                message: format!("{}: {}", &c[4], &c[5]),
            });
        } else if let Some(c) = GLOBAL.captures(line) {
            out.push(Diagnostic { file: String::new(), line: 0, col: 0, message: format!("{}: {}", &c[1], &c[2]) });
        } else if (line.starts_with(' ') || line.starts_with('\t'))
            && !line.trim().is_empty()
            && let Some(last) = out.last_mut()
        {
            last.message.push('\n');
            last.message.push_str(line.trim());
        }
        if out.len() >= MAX_DIAGNOSTICS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tsc_diagnostics() {
        let text = "src/tools/get_weather.ts(7,7): error TS2322: Type 'string' is not assignable to type 'number'.\n\
                    src/tools.ts(3,1): error TS2304: Cannot find name 'x'.\n  \
                    Did you mean 'y'?\n\
                    error TS5083: Cannot read file 'tsconfig.json'.\n";
        let d = parse_diagnostics(text);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].file, "src/tools/get_weather.ts");
        assert_eq!((d[0].line, d[0].col), (7, 7));
        assert_eq!(d[0].message, "TS2322: Type 'string' is not assignable to type 'number'.");
        assert_eq!(d[1].message, "TS2304: Cannot find name 'x'.\nDid you mean 'y'?");
        assert_eq!(d[2].file, "");
    }

    #[tokio::test]
    async fn a_missing_toolchain_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let tc = Toolchain::new(dir.path().join("nope"));
        let err = tc.bundle(dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("scripts/stack.sh toolchain"), "{err}");
        match tc.check(dir.path()).await {
            Err(CheckError::Toolchain(ToolchainError::Missing(_))) => {}
            other => panic!("expected Missing, got {other:?}"),
        }
    }

    #[test]
    fn the_installed_toolchain_is_complete_and_a_partial_one_is_not() {
        Toolchain::from_env().ensure_installed().expect("run scripts/stack.sh toolchain");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/esbuild/bin")).unwrap();
        let err = Toolchain::new(dir.path()).ensure_installed().unwrap_err();
        assert!(matches!(err, ToolchainError::Missing(_)), "{err}");
    }

    #[tokio::test]
    async fn a_hung_process_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let err = run("sleep", Path::new("sleep"), &["30".into()], dir.path(), Duration::from_millis(300))
            .await
            .err()
            .expect("timeout");
        assert!(matches!(err, ToolchainError::Timeout { tool: "sleep", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
