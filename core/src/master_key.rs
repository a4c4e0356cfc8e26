//! Where the master keys come from, and keeping them from child processes.
//!
//! Exactly one source: `BMM_SECRET_KEY` (the keys themselves),
//! `BMM_SECRET_KEY_FILE` (a file holding them) or `BMM_SECRET_KEY_COMMAND`
//! (a command printing them, for an operator's secrets manager: `vault kv get
//! -field=keys …`, `aws secretsmanager get-secret-value …`). Each holds a list
//! of 64-hex-character keys separated by commas, spaces or new lines (`#`
//! starts a comment in a file); the first key seals, all of them open. A
//! process reads them once at start.
//!
//! The key must not leak into what the platform runs: every child process
//! the platform starts removes [`SECRET_ENV`] from its environment
//! ([`scrub`] for `std::process::Command`; tokio's `Command` has the same
//! `env_remove`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::crypto::SecretBox;

/// The variables that carry a master key or say where it is.
pub const SECRET_ENV: [&str; 3] = ["BMM_SECRET_KEY", "BMM_SECRET_KEY_FILE", "BMM_SECRET_KEY_COMMAND"];

/// How long `BMM_SECRET_KEY_COMMAND` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Remove the master key's variables from a child's environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for v in SECRET_ENV {
        cmd.env_remove(v);
    }
    cmd
}

/// The keyring from whichever source is set, or the one problem with it
/// (naming the setting, never echoing a key). Dev mode without any source
/// uses the fixed development key.
pub fn keyring(keys: Option<&str>, file: Option<&str>, command: Option<&str>, dev: bool) -> Result<SecretBox, String> {
    let set: Vec<&str> = [("BMM_SECRET_KEY", keys), ("BMM_SECRET_KEY_FILE", file), ("BMM_SECRET_KEY_COMMAND", command)]
        .into_iter()
        .filter(|(_, v)| v.is_some_and(|v| !v.trim().is_empty()))
        .map(|(n, _)| n)
        .collect();
    if set.len() > 1 {
        return Err(format!("{}: set only one of them", set.join(", ")));
    }
    let (name, text) = match (keys, file, command) {
        (Some(k), _, _) if !k.trim().is_empty() => ("BMM_SECRET_KEY", k.to_owned()),
        (_, Some(f), _) if !f.trim().is_empty() => {
            ("BMM_SECRET_KEY_FILE", read_file(Path::new(f.trim())).map_err(|e| format!("BMM_SECRET_KEY_FILE: {e}"))?)
        }
        (_, _, Some(c)) if !c.trim().is_empty() => {
            ("BMM_SECRET_KEY_COMMAND", run_command(c).map_err(|e| format!("BMM_SECRET_KEY_COMMAND: {e}"))?)
        }
        _ if dev => return Ok(SecretBox::dev_key()),
        _ => {
            return Err("BMM_SECRET_KEY: required outside dev mode: 32 random bytes as 64 hex characters \
                        (`openssl rand -hex 32`), or BMM_SECRET_KEY_FILE / BMM_SECRET_KEY_COMMAND"
                .into());
        }
    };
    parse_list(&text).map_err(|e| format!("{name}: {e}"))
}

/// `key[, key…]`: commas, white space or new lines between keys; `#` to the end of a line is a comment.
fn parse_list(text: &str) -> Result<SecretBox, String> {
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|k| !k.is_empty())
        .collect();
    if keys.is_empty() {
        return Err("holds no key: 32 random bytes as 64 hex characters (`openssl rand -hex 32`)".into());
    }
    for (i, k) in keys.iter().enumerate() {
        if SecretBox::from_hex(k).is_err() {
            return Err(format!("key {} of {}: must be 32 bytes as 64 hex characters", i + 1, keys.len()));
        }
    }
    let ring = SecretBox::from_hex_list(&keys).map_err(|e| e.to_string())?;
    if ring.key_ids().len() != keys.len() {
        return Err("lists the same key twice".into());
    }
    Ok(ring)
}

fn read_file(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Whoever can write the file chooses the key new secrets are sealed with.
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(format!(
                "{} is writable by other users (mode {:o}); `chmod 600` it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `sh -c command`, without the key's own variables, its output the key list.
fn run_command(command: &str) -> Result<String, String> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = scrub(&mut cmd).spawn().map_err(|e| format!("cannot run sh: {e}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    // Read both pipes beside the wait, so a chatty command cannot block on a full pipe.
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).map(|_| s)
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {}s", COMMAND_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    };
    let stdout = stdout.join().map_err(|_| "reading its output failed".to_owned())?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let why: String = stderr.lines().next().unwrap_or("").chars().take(200).collect();
        return Err(format!("failed ({status}){}", if why.is_empty() { String::new() } else { format!(": {why}") }));
    }
    stdout.map_err(|e| format!("its output is not text: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: &str) -> String {
        b.repeat(32)
    }

    #[test]
    fn a_list_of_keys_the_first_current() {
        let ring = keyring(Some(&format!("{}, {}", k("aa"), k("bb"))), None, None, false).unwrap();
        let ids = ring.key_ids();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], SecretBox::from_hex(&k("aa")).unwrap().key_id);
        assert_eq!(ring.key_id, ids[0]);
        // One key is a list of one: the setting keeps its old meaning.
        assert_eq!(keyring(Some(&k("aa")), None, None, false).unwrap().key_ids(), vec![ids[0].clone()]);
    }

    #[test]
    fn bad_lists_name_the_setting_and_never_the_key() {
        let e = keyring(Some(&format!("{},abcd", k("aa"))), None, None, false).unwrap_err();
        assert_eq!(e, "BMM_SECRET_KEY: key 2 of 2: must be 32 bytes as 64 hex characters");
        assert!(!e.contains("aaaa"));
        let e = keyring(Some(&format!("{0},{0}", k("aa"))), None, None, false).unwrap_err();
        assert!(e.contains("same key twice"), "{e}");
        let e = keyring(Some(&k("aa")), Some("/x"), None, false).unwrap_err();
        assert!(e.starts_with("BMM_SECRET_KEY, BMM_SECRET_KEY_FILE: set only one"), "{e}");
        let e = keyring(None, None, None, false).unwrap_err();
        assert!(e.starts_with("BMM_SECRET_KEY: required outside dev mode"), "{e}");
        assert_eq!(keyring(None, None, None, true).unwrap().key_id, SecretBox::dev_key().key_id);
        assert_eq!(keyring(Some("  "), None, None, true).unwrap().key_id, SecretBox::dev_key().key_id);
    }

    #[test]
    fn keys_from_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("# new key first\n{}\n{} # the old one\n", k("aa"), k("bb"))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ring = keyring(None, path.to_str(), None, false).unwrap();
        assert_eq!(ring.key_ids().len(), 2);
        assert_eq!(ring.key_id, SecretBox::from_hex(&k("aa")).unwrap().key_id);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = keyring(None, path.to_str(), None, false).unwrap_err();
        assert!(e.starts_with("BMM_SECRET_KEY_FILE: ") && e.contains("writable by other users"), "{e}");

        let e = keyring(None, Some("/nonexistent/keys"), None, false).unwrap_err();
        assert!(e.starts_with("BMM_SECRET_KEY_FILE: cannot read /nonexistent/keys"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nothing\n").unwrap();
        let e = keyring(None, empty.to_str(), None, false).unwrap_err();
        assert!(e.contains("holds no key"), "{e}");
    }

    #[test]
    fn keys_from_a_command() {
        let ring = keyring(None, None, Some(&format!("printf '%s\\n' {}", k("cd"))), false).unwrap();
        assert_eq!(ring.key_id, SecretBox::from_hex(&k("cd")).unwrap().key_id);
        let e = keyring(None, None, Some("echo nope >&2; exit 3"), false).unwrap_err();
        assert!(e.starts_with("BMM_SECRET_KEY_COMMAND: failed (exit status: 3): nope"), "{e}");
        let e = keyring(None, None, Some("echo not-a-key"), false).unwrap_err();
        assert_eq!(e, "BMM_SECRET_KEY_COMMAND: key 1 of 1: must be 32 bytes as 64 hex characters");
    }

    #[test]
    fn scrub_removes_every_key_variable() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("env");
        for v in SECRET_ENV {
            cmd.env(v, "leaked");
        }
        let out = scrub(&mut cmd).output().unwrap();
        let env = String::from_utf8(out.stdout).unwrap();
        assert!(!env.contains("BMM_SECRET_KEY"), "{env}");
    }
}
