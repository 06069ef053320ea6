//! `exim-pilot user` against the embedded store: a user is added, then
//! changed from the command line (role, hosts, disabled, a new password,
//! as an administrator who lost theirs would), and the store holds each
//! change, with the sessions ended and every change audited.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use chrono::Utc;
use exim_pilot_api::auth::password;
use exim_pilot_store::{AuditFilter, PageRequest, Role, Session, SqliteStore, Store};

mod support;

use support::stdout_of;

/// Runs the binary with `stdin` as standard input.
fn exim_pilot(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_exim-pilot"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exim-pilot runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("exim-pilot ends")
}

/// Runs the binary, which must succeed; returns its standard output.
#[track_caller]
fn ok(args: &[&str], stdin: &str) -> String {
    stdout_of(exim_pilot(args, stdin))
}

fn store(dir: &Path) -> SqliteStore {
    SqliteStore::open_dir(dir).expect("store")
}

/// Whether ann's session `s1` is still live.
async fn session_is_live(dir: &Path) -> bool {
    let session = store(dir).session("s1").await.unwrap().expect("session");
    session.is_live(Utc::now())
}

#[tokio::test]
async fn a_user_is_changed_from_the_command_line() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("UTF-8 path");
    let first = "first-Secret-9183";
    ok(
        &[
            "user",
            "add",
            "ann",
            "--role",
            "admin",
            "--password-stdin",
            "--data",
            dir,
        ],
        &format!("{first}\n"),
    );

    // A session of ann's, as a login makes.
    let session = Session {
        id: "s1".into(),
        user: "ann".into(),
        token_hash: "hash".into(),
        created_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::hours(8),
        revoked_at: None,
        client_ip: None,
    };
    store(data.path()).save_session(&session).await.unwrap();
    assert!(session_is_live(data.path()).await);

    // A new password from standard input, a narrower role and scope; the
    // session ends.
    let second = "second-Secret-5521";
    let said = ok(
        &[
            "user",
            "set",
            "ann",
            "--role",
            "operator",
            "--host",
            "mx1",
            "--host",
            "mx2",
            "--password-stdin",
            "--data",
            dir,
        ],
        &format!("{second}\n"),
    );
    assert!(said.contains("role operator"), "{said}");
    let ann = store(data.path()).user("ann").await.unwrap().unwrap();
    assert_eq!(ann.role, Role::Operator);
    assert_eq!(ann.hosts, ["mx1", "mx2"]);
    assert!(!ann.disabled);
    assert!(password::verify(second, &ann.password_hash));
    assert!(!password::verify(first, &ann.password_hash));
    assert!(!session_is_live(data.path()).await);

    // Disabled, then enabled with every server and a generated password,
    // printed once.
    ok(&["user", "set", "ann", "--disable", "--data", dir], "");
    assert!(
        store(data.path())
            .user("ann")
            .await
            .unwrap()
            .unwrap()
            .disabled
    );
    let said = ok(
        &[
            "user",
            "set",
            "ann",
            "--enable",
            "--all-hosts",
            "--new-password",
            "--data",
            dir,
        ],
        "",
    );
    let generated = said
        .lines()
        .find_map(|l| l.strip_prefix("Password (shown only now): "))
        .unwrap_or_else(|| panic!("no password in {said:?}"));
    let ann = store(data.path()).user("ann").await.unwrap().unwrap();
    assert!(!ann.disabled);
    assert!(ann.hosts.is_empty());
    assert!(password::verify(generated, &ann.password_hash));

    // Each change is in the audit trail, made by the command line.
    let store = store(data.path());
    let filter = AuditFilter {
        action: Some("user_update".into()),
        ..AuditFilter::default()
    };
    let page = PageRequest {
        first: 10,
        after: None,
    };
    let audit = store.audit_log(&filter, &page).await.unwrap();
    assert_eq!(audit.items.len(), 3, "{:?}", audit.items);
    assert!(audit
        .items
        .iter()
        .all(|e| e.actor == "cli" && e.outcome == "ok"));
}

#[test]
fn a_change_that_would_weaken_or_do_nothing_is_refused() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("UTF-8 path");
    ok(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "viewer",
            "--password-stdin",
            "--data",
            dir,
        ],
        "bob-Secret-7731\n",
    );
    let refused = |args: &[&str], stdin: &str, says: &str| {
        let out = exim_pilot(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["user", "set", "bob", "--data", dir],
        "",
        "nothing to change",
    );
    refused(
        &["user", "set", "bob", "--password-stdin", "--data", dir],
        "short\n",
        "cannot change the user bob",
    );
    refused(
        &["user", "set", "nobody", "--disable", "--data", dir],
        "",
        "cannot change the user nobody",
    );
    refused(
        &["user", "set", "bob", "--disable", "--enable", "--data", dir],
        "",
        "cannot be used with",
    );

    // A mistyped data directory is not made into an empty store.
    let typo = data.path().join("no-such-store");
    let typo = typo.to_str().expect("UTF-8 path");
    refused(&["user", "list", "--data", typo], "", "no exim-pilot data");
    refused(
        &["user", "set", "bob", "--disable", "--data", typo],
        "",
        "no exim-pilot data",
    );
    assert!(!Path::new(typo).exists());
}
