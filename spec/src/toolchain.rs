//! Runs the node toolchain (installed from `runner-template/package-lock.json`
//! by `scripts/stack.sh toolchain`) over a rendered tree on disk:
//! `tsc --noEmit` (TypeScript 7, the native compiler) and `esbuild`.
//!
//! The tree is hostile code: both tools run inside a bubblewrap sandbox
//! ([`Toolchain::bwrap`]) with an empty environment (`PATH`, `HOME=/tmp`,
//! `NO_COLOR` only), no network (a network namespace of its own), its own pid
//! namespace (`/proc` shows only the sandbox), a tmpfs `/tmp`, and a root
//! filesystem that holds nothing but the tree (read-only, at `/build`), the
//! toolchain's `node_modules` (read-only, at `/build/node_modules`) and, for
//! esbuild, an empty output folder (`/out`). There is no fallback: without
//! bwrap, check and bundle fail with [`ToolchainError::SandboxMissing`].
//! esbuild's `--metafile` is read back and every input must lie inside the
//! tree or the toolchain's `node_modules` ([`ToolchainError::OutsideInput`]).
//!
//! Processes run in their own process group with a timeout; on timeout the
//! whole group is killed (bwrap's `--die-with-parent` takes the sandbox with it).

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
/// Where the tree is inside the sandbox (the tools' working directory).
const JAIL_TREE: &str = "/build";
/// Where esbuild writes the bundle and its metafile inside the sandbox.
const JAIL_OUT: &str = "/out";
/// The only environment the tools get.
const JAIL_PATH: &str = "/usr/bin:/bin";
/// Read-only system folders, bound only for the node launcher of `tsc`
/// (the native compiler and esbuild are static binaries that need none).
const SYSTEM_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/bin"];
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
    /// No silent fallback: unsandboxed, a handler could read the worker's secrets.
    #[error(
        "the build sandbox is missing: {program} cannot be run ({reason}); tsc and esbuild run only inside \
         bubblewrap (install it with `apt-get install bubblewrap` or scripts/stack.sh deps)"
    )]
    SandboxMissing { program: PathBuf, reason: String },
    /// esbuild read a file outside the tree and the toolchain: the spec's fault, never retried.
    #[error(
        "esbuild read {path}, which is outside the rendered tree and the toolchain's node_modules; the bundle is refused"
    )]
    OutsideInput { path: String },
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
    /// The bubblewrap binary (`bwrap`, looked up on `PATH`).
    pub bwrap: PathBuf,
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
        Self {
            dir: dir.into(),
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            bundle_timeout: DEFAULT_BUNDLE_TIMEOUT,
            bwrap: PathBuf::from("bwrap"),
        }
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
    fn tsc(&self, nm: &Path) -> Result<Tool, ToolchainError> {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "x64",
            "aarch64" => "arm64",
            other => other,
        };
        let native = format!("@typescript/typescript-{os}-{arch}/lib/tsc");
        if nm.join(&native).is_file() {
            return Ok(Tool { program: jailed_module(&native), args: vec![], system: false });
        }
        let launcher = "typescript/bin/tsc";
        if nm.join(launcher).is_file() {
            return Ok(Tool { program: "node".into(), args: vec![jailed_module(launcher)], system: true });
        }
        Err(ToolchainError::Missing(self.dir.clone()))
    }

    fn esbuild(&self, nm: &Path) -> Result<Tool, ToolchainError> {
        let bin = "esbuild/bin/esbuild";
        if nm.join(bin).is_file() {
            Ok(Tool { program: jailed_module(bin), args: vec![], system: false })
        } else {
            Err(ToolchainError::Missing(self.dir.clone()))
        }
    }

    /// The sandbox works: esbuild answers `--version` from inside it (for `bmm doctor`).
    pub async fn check_sandbox(&self) -> Result<String, ToolchainError> {
        let nm = self.node_modules()?;
        let tool = self.esbuild(&nm)?;
        let empty = tempfile_dir()?;
        let jail = Jail { tree: empty.path(), node_modules: &nm, out: None, system: false };
        let cmd = self.jailed(&jail, &tool.program, &["--version".to_owned()])?;
        let out = run("esbuild", cmd, &self.bwrap, Duration::from_secs(20)).await?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.code != Some(0) {
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(ToolchainError::Failed { tool: "bwrap", code: out.code, output: tail(&err) });
        }
        Ok(format!("bubblewrap sandbox (no network, empty environment) runs esbuild {text}"))
    }

    /// The bwrap command that runs `program args` in the sandbox `jail` describes.
    fn jailed(&self, jail: &Jail<'_>, program: &str, args: &[String]) -> Result<Command, ToolchainError> {
        let mut cmd = Command::new(&self.bwrap);
        // bwrap itself starts with nothing of ours too: inside the sandbox
        // `/proc/1` is bwrap's own init, whose environment `--clearenv` does
        // not touch.
        cmd.env_clear().env("PATH", JAIL_PATH);
        cmd.args([
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--cap-drop",
            "ALL",
            "--setenv",
            "PATH",
            JAIL_PATH,
            "--setenv",
            "HOME",
            "/tmp",
            "--setenv",
            "NO_COLOR",
            "1",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]);
        if jail.system {
            for dir in SYSTEM_DIRS {
                cmd.args(["--ro-bind-try", dir, dir]);
            }
        }
        // The tree's own entries, one bind each: the toolchain's node_modules
        // is bound beside them, and nothing a top-level symlink points at
        // elsewhere on the host is ever bound.
        let entries = std::fs::read_dir(jail.tree)
            .map_err(|source| ToolchainError::Io { path: jail.tree.to_path_buf(), source })?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ToolchainError::Io { path: jail.tree.to_path_buf(), source })?;
            let name = entry.file_name();
            if name == NODE_MODULES {
                continue;
            }
            let kind = entry.file_type().map_err(|source| ToolchainError::Io { path: entry.path(), source })?;
            if !(kind.is_file() || kind.is_dir()) {
                return Err(ToolchainError::Io {
                    path: entry.path(),
                    source: std::io::Error::other("the rendered tree may hold only files and folders"),
                });
            }
            names.push(name);
        }
        names.sort();
        for name in names {
            let inside = Path::new(JAIL_TREE).join(&name);
            cmd.arg("--ro-bind").arg(jail.tree.join(&name)).arg(inside);
        }
        cmd.arg("--ro-bind").arg(jail.node_modules).arg(Path::new(JAIL_TREE).join(NODE_MODULES));
        if let Some(out) = jail.out {
            cmd.arg("--bind").arg(out).arg(JAIL_OUT);
        }
        cmd.args(["--chdir", JAIL_TREE, "--", program]).args(args);
        Ok(cmd)
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

    /// `tsc --noEmit -p <tree>` in the sandbox: `Ok(())` when the tree type-checks.
    pub async fn check(&self, tree: &Path) -> Result<(), CheckError> {
        let nm = self.node_modules()?;
        let tool = self.tsc(&nm)?;
        let mut args = tool.args.clone();
        args.extend(["--noEmit", "--pretty", "false", "-p", "tsconfig.json"].map(String::from));
        let jail = Jail { tree, node_modules: &nm, out: None, system: tool.system };
        let cmd = self.jailed(&jail, &tool.program, &args)?;
        let out = run("tsc", cmd, &self.bwrap, self.check_timeout).await?;
        if out.code == Some(0) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let diagnostics = parse_diagnostics(&text);
        if diagnostics.is_empty() {
            // A non-zero exit without diagnostics is the compiler (or the sandbox) failing, not the code.
            return Err(ToolchainError::Failed { tool: "tsc", code: out.code, output: tail(&text) }.into());
        }
        Err(CheckFailure { diagnostics }.into())
    }

    /// esbuild `src/server.ts` into one ESM file for node 20 with every
    /// dependency inlined, in the sandbox. Deterministic: paths in the output
    /// are relative to the tree, there are no timestamps, so the same tree
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
        let tool = self.esbuild(&nm)?;
        let out_dir = tempfile_dir()?;
        let outfile = format!("{JAIL_OUT}/server.mjs");
        let metafile = format!("{JAIL_OUT}/meta.json");
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
            &format!("--outfile={outfile}"),
            &format!("--metafile={metafile}"),
            // CommonJS dependencies call require() for node built-ins; ESM has no require.
            "--banner:js=import { createRequire as __bmmCreateRequire } from 'node:module'; \
             const require = __bmmCreateRequire(import.meta.url);",
        ]
        .map(String::from)
        .to_vec();
        let jail = Jail { tree, node_modules: &nm, out: Some(out_dir.path()), system: tool.system };
        let cmd = self.jailed(&jail, &tool.program, &args)?;
        let out = run("esbuild", cmd, &self.bwrap, self.bundle_timeout).await?;
        let read = |name: &str| {
            let path = out_dir.path().join(name);
            std::fs::read(&path).map_err(|source| ToolchainError::Io { path, source })
        };
        if out.code != Some(0) {
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(ToolchainError::Failed { tool: "esbuild", code: out.code, output: tail(&text) });
        }
        // The inputs first: a bundle that read a file from elsewhere is never returned.
        check_inputs(tree, &read("meta.json")?)?;
        let bytes = read("server.mjs")?;
        if bytes.is_empty() {
            return Err(ToolchainError::Failed { tool: "esbuild", code: out.code, output: "empty bundle".into() });
        }
        Ok(bytes)
    }
}

/// How to start one tool inside the sandbox.
struct Tool {
    /// Path inside the sandbox (or `node` on the sandbox's `PATH`).
    program: String,
    args: Vec<String>,
    /// Needs the read-only system folders (the node launcher does).
    system: bool,
}

/// What the sandbox holds, as host paths.
struct Jail<'a> {
    tree: &'a Path,
    node_modules: &'a Path,
    out: Option<&'a Path>,
    system: bool,
}

/// `rel` (below `node_modules`) as the sandbox sees it.
fn jailed_module(rel: &str) -> String {
    format!("{JAIL_TREE}/{NODE_MODULES}/{rel}")
}

fn tempfile_dir() -> Result<tempfile::TempDir, ToolchainError> {
    tempfile::tempdir().map_err(|source| ToolchainError::Io { path: std::env::temp_dir(), source })
}

/// Every input of esbuild's metafile is a file of the tree or of the
/// toolchain's `node_modules`, as the sandbox saw them (paths relative to
/// `/build`). Anything else — an absolute path, `..` out of the tree, another
/// namespace such as `data:` — names itself in the error.
fn check_inputs(tree: &Path, metafile: &[u8]) -> Result<(), ToolchainError> {
    #[derive(Deserialize)]
    struct Meta {
        inputs: std::collections::BTreeMap<String, serde_json::Value>,
    }
    let meta: Meta = serde_json::from_slice(metafile).map_err(|e| ToolchainError::Failed {
        tool: "esbuild",
        code: None,
        output: format!("unreadable metafile: {e}"),
    })?;
    for input in meta.inputs.keys() {
        if !input_inside(tree, input) {
            return Err(ToolchainError::OutsideInput { path: input.clone() });
        }
    }
    Ok(())
}

/// Whether one metafile input lies inside the tree or the toolchain's node_modules.
fn input_inside(tree: &Path, input: &str) -> bool {
    use std::path::Component;
    // esbuild writes inputs relative to its working directory (the jail's
    // tree); a `namespace:` prefix means a file that is no file.
    if input.is_empty() || input.contains(':') || input.contains('\0') {
        return false;
    }
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    let joined = Path::new(JAIL_TREE).join(input);
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return false;
                }
            }
            Component::Prefix(_) => return false,
        }
    }
    let jail_root = JAIL_TREE.trim_start_matches('/');
    let [root, rest @ ..] = parts.as_slice() else { return false };
    if *root != jail_root || rest.is_empty() {
        return false;
    }
    if rest[0] == NODE_MODULES {
        return rest.len() > 1;
    }
    // A file of the tree itself (never a folder or a link out of it).
    let host: PathBuf = rest.iter().collect();
    std::fs::symlink_metadata(tree.join(host)).is_ok_and(|m| m.is_file())
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

async fn run(tool: &'static str, mut cmd: Command, bwrap: &Path, timeout: Duration) -> Result<Output, ToolchainError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound && cmd.as_std().get_program() == bwrap.as_os_str() {
            ToolchainError::SandboxMissing { program: bwrap.to_path_buf(), reason: source.to_string() }
        } else {
            ToolchainError::Spawn { tool, source }
        }
    })?;
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

    /// The attack issue 13 reports: a handler body that closes its function
    /// and adds a top-level import of the process environment, silenced for tsc.
    const ENVIRON_ATTACK: &str = "return new TextDecoder().decode(leak);\n}\n// @ts-ignore\n\
        ; import leak from \"/proc/self/environ\" with { type: \"bytes\" };\nexport function rest() {\n";

    #[test]
    fn the_environ_import_of_issue_13_is_refused_with_its_path() {
        on_big_stack(async {
            let mut spec = crate::testing::echo_spec();
            spec.tools[0].handler = crate::model::Handler::Code { typescript: ENVIRON_ATTACK.into() };
            let dir = tempfile::tempdir().unwrap();
            write_tree(&crate::render(&spec), dir.path()).unwrap();
            let tc = Toolchain::from_env();
            // tsc alone does not stop it (the comment silences it): why the other layers exist.
            tc.check(dir.path()).await.expect("tsc accepts the silenced import");
            let err = tc.bundle(dir.path()).await.unwrap_err();
            match &err {
                ToolchainError::OutsideInput { path } => assert_eq!(path, "../proc/self/environ"),
                other => panic!("expected OutsideInput, got {other}"),
            }
            assert!(err.to_string().contains("esbuild read ../proc/self/environ"), "{err}");
        });
    }

    const CANARY: &str = "bmm-sandbox-canary-5f1e0c";

    /// The canary goes into this process's environment, as the worker's secrets
    /// are in the worker's: whatever the sandbox inherits would carry it.
    fn with_canary(test: impl std::future::Future<Output = ()> + Send + 'static) {
        // SAFETY: set before any other thread of this test exists (the runtime
        // is built after it); nextest runs each test in a process of its own.
        unsafe { std::env::set_var("BMM_SANDBOX_CANARY", CANARY) };
        on_big_stack(test);
    }

    /// Debug builds of these futures need more than the default 2 MiB test-thread stack.
    fn on_big_stack(test: impl std::future::Future<Output = ()> + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(16 * 1024 * 1024)
            .spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test))
            .unwrap()
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }

    /// What esbuild inside the sandbox reads at `path` (a text import), or its error.
    async fn read_in_sandbox(path: &str) -> Result<String, String> {
        let tc = Toolchain::from_env();
        let nm = tc.node_modules().unwrap();
        let tool = tc.esbuild(&nm).unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("src")).unwrap();
        let probe = format!("import t from {path:?} with {{ type: \"text\" }};\nconsole.log(t);\n");
        std::fs::write(tree.path().join("src/probe.ts"), probe).unwrap();
        let out = tempfile::tempdir().unwrap();
        let jail = Jail { tree: tree.path(), node_modules: &nm, out: Some(out.path()), system: false };
        let args = ["src/probe.ts", "--bundle", "--platform=node", "--format=esm", "--log-level=error"]
            .map(String::from)
            .into_iter()
            .chain([format!("--outfile={JAIL_OUT}/probe.mjs")])
            .collect::<Vec<_>>();
        let cmd = tc.jailed(&jail, &tool.program, &args).unwrap();
        let o = run("esbuild", cmd, &tc.bwrap, Duration::from_secs(30)).await.unwrap();
        if o.code == Some(0) {
            Ok(std::fs::read_to_string(out.path().join("probe.mjs")).unwrap())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    #[test]
    fn the_sandbox_has_an_empty_environment() {
        with_canary(async {
            let own = read_in_sandbox("/proc/self/environ").await.expect("a tool may read its own environment");
            assert!(own.contains("PATH=/usr/bin:/bin\\0HOME=/tmp"), "{own}");
            assert!(!own.contains(CANARY) && !own.contains("BMM_"), "{own}");
            // pid 1 of the sandbox's pid namespace is bwrap's init, not the host's.
            match read_in_sandbox("/proc/1/environ").await {
                Ok(init) => assert!(!init.contains(CANARY) && !init.contains("BMM_"), "{init}"),
                Err(e) => assert!(e.contains("Could not") || e.contains("denied"), "{e}"),
            }
            // No process of the host is visible at all.
            let host_pid = std::process::id();
            let err = read_in_sandbox(&format!("/proc/{host_pid}/environ")).await;
            assert!(err.as_ref().is_err_and(|e| e.contains("Could not resolve")), "{err:?}");
        });
    }

    #[test]
    fn the_sandbox_sees_nothing_of_the_host_filesystem() {
        on_big_stack(async {
            let data = tempfile::tempdir().unwrap();
            let secret = data.path().join("jwks.json");
            std::fs::write(&secret, "platform data").unwrap();
            let mut hidden = vec![
                secret.to_string_lossy().into_owned(),
                // This checkout (under /work) and this test binary (under /root/.cache).
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").to_owned(),
                std::env::current_exe().unwrap().to_string_lossy().into_owned(),
                "/etc/passwd".to_owned(),
            ];
            if let Some(dir) = std::env::var_os("BMM_DATA_DIR").map(PathBuf::from)
                && let Some(file) = std::fs::read_dir(&dir).ok().and_then(|mut d| d.find_map(|e| e.ok()))
                && file.path().is_file()
            {
                hidden.push(file.path().to_string_lossy().into_owned());
            }
            for path in hidden {
                assert!(Path::new(&path).is_file(), "the probe {path} must exist on the host");
                let seen = read_in_sandbox(&path).await;
                assert!(seen.as_ref().is_err_and(|e| e.contains("Could not resolve")), "{path} is visible: {seen:?}");
            }
        });
    }

    #[test]
    fn the_sandbox_has_no_network() {
        on_big_stack(async {
            // A listener of this test on the host's loopback: the only address probed.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let tc = Toolchain::from_env();
            let nm = tc.node_modules().unwrap();
            let tree = tempfile::tempdir().unwrap();
            let jail = Jail { tree: tree.path(), node_modules: &nm, out: None, system: true };
            let script = format!(
                "const s = require('net').connect({port}, '127.0.0.1');\
                 s.on('connect', () => {{ console.log('connected'); process.exit(0); }});\
                 s.on('error', (e) => {{ console.log(e.code); process.exit(3); }});"
            );
            let cmd = tc.jailed(&jail, "node", &["-e".to_owned(), script]).unwrap();
            let out = run("node", cmd, &tc.bwrap, Duration::from_secs(30)).await.unwrap();
            let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert_eq!(out.code, Some(3), "stdout {said}, stderr {}", String::from_utf8_lossy(&out.stderr));
            assert!(["ENETUNREACH", "ECONNREFUSED"].contains(&said.as_str()), "{said}");
            let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
            assert!(accepted.is_err(), "the sandbox reached the host's loopback");
        });
    }

    #[test]
    fn without_bubblewrap_check_and_bundle_refuse_to_run() {
        on_big_stack(async {
            let mut tc = Toolchain::from_env();
            tc.bwrap = PathBuf::from("/nonexistent/bwrap");
            let dir = tempfile::tempdir().unwrap();
            write_tree(&crate::render(&crate::testing::echo_spec()), dir.path()).unwrap();
            let err = tc.bundle(dir.path()).await.unwrap_err();
            assert!(matches!(err, ToolchainError::SandboxMissing { .. }), "{err}");
            assert!(err.to_string().contains("apt-get install bubblewrap"), "{err}");
            match tc.check(dir.path()).await {
                Err(CheckError::Toolchain(ToolchainError::SandboxMissing { .. })) => {}
                other => panic!("expected SandboxMissing, got {other:?}"),
            }
            assert!(matches!(tc.check_sandbox().await, Err(ToolchainError::SandboxMissing { .. })));
            let ok = Toolchain::from_env().check_sandbox().await.expect("the sandbox works here");
            assert!(ok.contains("esbuild 0."), "{ok}");
        });
    }

    #[test]
    fn metafile_inputs_must_stay_inside_the_tree_and_the_toolchain() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("src")).unwrap();
        std::fs::write(tree.path().join("src/server.ts"), "").unwrap();
        let meta = |inputs: &[&str]| {
            let map: serde_json::Map<String, serde_json::Value> =
                inputs.iter().map(|i| (i.to_string(), serde_json::json!({}))).collect();
            serde_json::to_vec(&serde_json::json!({ "inputs": map })).unwrap()
        };
        assert!(check_inputs(tree.path(), &meta(&["src/server.ts", "node_modules/zod/index.js"])).is_ok());
        for bad in [
            "../proc/self/environ",
            "/etc/passwd",
            "src/../../root/x",
            "node_modules/../../etc/x",
            "data:text/javascript,1",
            "src/missing.ts",
            "src",
            "node_modules",
        ] {
            match check_inputs(tree.path(), &meta(&["src/server.ts", bad])) {
                Err(ToolchainError::OutsideInput { path }) => assert_eq!(path, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(check_inputs(tree.path(), b"not json").is_err());
    }

    #[tokio::test]
    async fn a_hung_process_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let mut cmd = Command::new("sleep");
        cmd.arg("30").current_dir(dir.path());
        let err = run("sleep", cmd, Path::new("bwrap"), Duration::from_millis(300)).await.err().expect("timeout");
        assert!(matches!(err, ToolchainError::Timeout { tool: "sleep", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
