//! `exim-pilot user`: the users of the API.
//!
//! There is no default user and no default password. The first
//! administrator is made here, on the machine that holds the store:
//! `exim-pilot user add NAME --role admin --password-stdin` reads the
//! password from standard input; without `--password-stdin` (and without
//! `EXIM_PILOT_PASSWORD` in the environment) a random password is
//! generated and printed once. Every user added is in the audit trail,
//! made by `cli`.
//!
//! `exim-pilot user set NAME` changes a user from the same machine: role,
//! host scope, disabled or enabled, and a new password (read or generated
//! as for `add`), which is how an administrator who lost theirs gets back
//! in. Disabling a user or setting a password ends their sessions. Users
//! are disabled rather than removed, so that the audit trail keeps naming
//! someone who exists.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use exim_pilot_api::auth::{self, password, Actor, UserChange};
use exim_pilot_store::{ClickHouseStore, Role, Store};

use super::common;

/// Options of `exim-pilot user`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Add a user.
    Add(AddArgs),
    /// Change a user: role, hosts, disabled or enabled, password.
    Set(SetArgs),
    /// List the users.
    List(StoreArgs),
}

/// Which store holds the users.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// The data directory of the embedded store.
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "clickhouse",
        required_unless_present = "clickhouse"
    )]
    data: Option<PathBuf>,

    /// Fleet mode's ClickHouse server (`http://HOST:8123`).
    #[arg(long, value_name = "URL")]
    clickhouse: Option<String>,

    /// The ClickHouse database (with --clickhouse).
    #[arg(long, value_name = "NAME", default_value = exim_pilot_store::clickhouse::DEFAULT_DATABASE)]
    database: String,
}

#[derive(clap::Args, Debug)]
struct AddArgs {
    /// The login name.
    name: String,

    /// admin, operator or viewer.
    #[arg(long)]
    role: Role,

    /// Read the password from standard input (its first line).
    #[arg(long)]
    password_stdin: bool,

    /// A mail server the user may see; repeat for several (default: all).
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,

    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args, Debug)]
struct SetArgs {
    /// The login name.
    name: String,

    /// A new role: admin, operator or viewer.
    #[arg(long)]
    role: Option<Role>,

    /// Refuse the user's logins and end their sessions.
    #[arg(long, conflicts_with = "enable")]
    disable: bool,

    /// Let a disabled user log in again.
    #[arg(long)]
    enable: bool,

    /// The mail servers the user may see, replacing the current ones;
    /// repeat for several.
    #[arg(long = "host", value_name = "NAME", conflicts_with = "all_hosts")]
    hosts: Vec<String>,

    /// Let the user see every mail server.
    #[arg(long)]
    all_hosts: bool,

    /// Set a new password, read from standard input (its first line).
    #[arg(long, conflicts_with = "new_password")]
    password_stdin: bool,

    /// Set a new password, generated and printed once.
    #[arg(long)]
    new_password: bool,

    #[command(flatten)]
    store: StoreArgs,
}

/// The first line of standard input.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from standard input")?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Opens the store; an embedded one is created when `create` (adding the
/// first user may come before anything else), and must exist otherwise,
/// so that a mistyped directory is an error rather than an empty store.
fn open(
    rt: &tokio::runtime::Runtime,
    args: &StoreArgs,
    create: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    match (&args.clickhouse, &args.data) {
        (Some(url), _) => Ok(Arc::new(
            rt.block_on(ClickHouseStore::connect(url, &args.database))
                .with_context(|| format!("cannot open the ClickHouse store at {url}"))?,
        )),
        (None, Some(dir)) if create => Ok(common::open_store(dir)?),
        (None, Some(dir)) => Ok(common::open_existing_store(dir)?),
        (None, None) => bail!("give --data DIR or --clickhouse URL"),
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = common::runtime()?;
    match args.action {
        Action::Add(add) => {
            let store = open(&rt, &add.store, true)?;
            let (secret, generated) = if add.password_stdin {
                (password_from_stdin()?, false)
            } else if let Ok(p) = std::env::var("EXIM_PILOT_PASSWORD") {
                (p, false)
            } else {
                (password::generate(), true)
            };
            let user = rt
                .block_on(auth::add_user(
                    &*store,
                    &Actor::command_line(),
                    &add.name,
                    add.role,
                    &secret,
                    add.hosts,
                ))
                .with_context(|| format!("cannot add the user {}", add.name))?;
            println!("Added user {} with role {}.", user.name, user.role);
            if generated {
                println!("Password (shown only now): {secret}");
            }
        }
        Action::Set(set) => {
            let generated = set.new_password.then(password::generate);
            let password = if set.password_stdin {
                Some(password_from_stdin()?)
            } else {
                generated.clone()
            };
            let change = UserChange {
                role: set.role,
                disabled: (set.disable || set.enable).then_some(set.disable),
                hosts: (set.all_hosts || !set.hosts.is_empty()).then_some(set.hosts),
                password,
            };
            if change.role.is_none()
                && change.disabled.is_none()
                && change.hosts.is_none()
                && change.password.is_none()
            {
                bail!(
                    "nothing to change: give --role, --disable, --enable, --host, --all-hosts, \
                     --password-stdin or --new-password"
                );
            }
            let store = open(&rt, &set.store, false)?;
            let user = rt
                .block_on(auth::update_user(
                    &*store,
                    &Actor::command_line(),
                    &set.name,
                    change,
                ))
                .with_context(|| format!("cannot change the user {}", set.name))?;
            let state = if user.disabled { ", disabled" } else { "" };
            let hosts = if user.hosts.is_empty() {
                "every mail server".to_string()
            } else {
                user.hosts.join(", ")
            };
            println!(
                "User {}: role {}{state}; sees {hosts}.",
                user.name, user.role
            );
            if let Some(secret) = generated {
                println!("Password (shown only now): {secret}");
            }
        }
        Action::List(store_args) => {
            let store = open(&rt, &store_args, false)?;
            for u in rt.block_on(store.users())? {
                let state = if u.disabled { " (disabled)" } else { "" };
                println!("{}\t{}{state}", u.name, u.role);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
