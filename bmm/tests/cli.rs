//! The CLI as a user meets it: exit codes and messages.

use std::process::{Command, Output};

use bmm_db::testing::TestDb;

fn bmm(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bmm"));
    cmd.args(args);
    // Start from a clean slate: no BMM_* from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("BMM_") || k == "ANTHROPIC_API_KEY" {
            cmd.env_remove(k);
        }
    }
    cmd.env("BMM_CONFIG", "/nonexistent/bmm.toml");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bmm runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let o = bmm(&["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unrecognized subcommand 'frobnicate'"), "{}", text(&o));
}

#[test]
fn missing_argument_is_a_usage_error() {
    let o = bmm(&["org", "create-api-key"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--email"), "{}", text(&o));
}

#[test]
fn bad_configuration_names_every_problem() {
    let o = bmm(&["doctor"], &[("BMM_LISTEN", "nowhere"), ("BMM_TEMPORAL_ADDRESS", "not a url")]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("BMM_LISTEN") && t.contains("BMM_TEMPORAL_ADDRESS"), "{t}");
    assert!(t.contains("2 problem(s)"), "{t}");
}

#[tokio::test]
async fn migrate_applies_then_reports_up_to_date() {
    let db = TestDb::empty().await;
    let first = bmm(&["migrate"], &[("BMM_DATABASE_URL", &db.url)]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("applied 20261126000001"), "{}", text(&first));
    let second = bmm(&["migrate"], &[("BMM_DATABASE_URL", &db.url)]);
    assert!(text(&second).contains("database is up to date"), "{}", text(&second));
}

#[tokio::test]
async fn doctor_names_the_missing_component_and_its_fix() {
    let db = TestDb::new().await;
    let toolchain = std::env::var("BMM_TOOLCHAIN_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.bmm/toolchain").into());
    // Nothing listens on port 1: Temporal is "missing".
    let o = bmm(
        &["doctor"],
        &[
            ("BMM_DATABASE_URL", &db.url),
            ("BMM_TEMPORAL_ADDRESS", "http://127.0.0.1:1"),
            ("BMM_TOOLCHAIN_DIR", &toolchain),
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  Temporal"), "{t}");
    assert!(t.contains("fix: scripts/stack.sh temporal"), "{t}");
    assert!(t.contains("ok    PostgreSQL"), "{t}");
    // A missing toolchain folder and runtime image are named too.
    let o = bmm(
        &["doctor"],
        &[
            ("BMM_DATABASE_URL", &db.url),
            ("BMM_TOOLCHAIN_DIR", "/nonexistent"),
            ("BMM_RUNTIME_IMAGE", "bmm-no-such-image:0"),
        ],
    );
    let t = text(&o);
    assert!(t.contains("FAIL  node toolchain") && t.contains("fix: scripts/stack.sh toolchain"), "{t}");
    assert!(t.contains("FAIL  runtime image") && t.contains("bmm-no-such-image:0 is missing"), "{t}");
}

#[test]
fn keys_generate_prints_a_usable_key() {
    let o = bmm(&["keys", "generate"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let key = String::from_utf8(o.stdout.clone()).unwrap().trim().to_owned();
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
    assert_ne!(key, String::from_utf8(bmm(&["keys", "generate"], &[]).stdout).unwrap().trim());
}

#[test]
fn a_bad_master_key_source_is_a_configuration_error() {
    let o = bmm(&["keys", "status"], &[("BMM_DEV", "false"), ("BMM_SECRET_KEY_FILE", "/nonexistent/keys")]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(text(&o).contains("BMM_SECRET_KEY_FILE: cannot read /nonexistent/keys"), "{}", text(&o));
    let o = bmm(&["keys", "status"], &[("BMM_SECRET_KEY", "abc"), ("BMM_SECRET_KEY_COMMAND", "true")]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(text(&o).contains("set only one of them"), "{}", text(&o));
}

#[tokio::test]
async fn keys_status_counts_values_per_key_and_rotate_master_checks_its_input() {
    let db = TestDb::new().await;
    let key = "ab".repeat(32);
    let cmd = format!("printf '%s' {key}");
    let env = [("BMM_DATABASE_URL", db.url.as_str()), ("BMM_SECRET_KEY_COMMAND", cmd.as_str())];
    let o = bmm(&["keys", "status"], &env);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let id = bmm_core::crypto::SecretBox::from_hex(&key).unwrap().key_id;
    assert!(t.contains(&format!("  {id}  current")), "{t}");
    assert!(t.contains(&format!("not yet under {id}: 0")), "{t}");
    let o = bmm(&["keys", "rotate-master", "--batch-size", "0"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--batch-size must be at least 1"), "{}", text(&o));
}

#[test]
fn the_key_command_does_not_see_the_key_variables() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env");
    let cmd = format!("env > {}; printf '%s' {}", seen.display(), "cd".repeat(32));
    let o = bmm(&["keys", "generate"], &[("BMM_SECRET_KEY_COMMAND", &cmd)]);
    assert!(o.status.success(), "{}", text(&o));
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.contains("PATH="), "the command ran with the rest of the environment: {env}");
    assert!(!env.contains("BMM_SECRET_KEY"), "{env}");
}
