//! A real Exim for queue tests, with a configuration and spool of its own.
//!
//! [`Exim`] runs Debian's `exim4` binary (from `exim4-daemon-light`, which
//! `scripts/services.sh install` installs; `EXIM_PILOT_EXIM` names another
//! binary) with `-C` and a configuration written into a temporary folder:
//! spool, logs and pid file live there, and no daemon is ever started.
//! Messages are submitted with `exim -bs` (SMTP on standard input, which
//! gives their ids back) and stay queued (`queue_only`). Nothing reaches
//! DNS or the network: host lookups and ident are off, and every address
//! is routed by `manualroute` to `127.0.0.1` on a closed port, so every
//! delivery attempt is deferred with "Connection refused", except local
//! parts starting with `done`, which a `:blackhole:` redirect delivers:
//! submit one to `done@...` and one to another address, run the queue
//! ([`Exim::queue_run`]), and `exim -bp` shows the first one `D`elivered.
//!
//! Privileges. Exim keeps its root privilege for `-C` only with files
//! listed in its trusted configurations (`/etc/exim4/trusted_configs`),
//! which these tests leave alone. Without it:
//!
//! - run as root (as CI does), the calling Exim process stays root, which
//!   makes it an Exim administrator for `-bp` and the `-M` options, but
//!   receiving and delivering run as Exim's user (`Debian-exim`), as they
//!   do on a real server. So the spool and log folders are given to that
//!   user, and the temporary folder is made traversable (mode 0711).
//! - run as another user, Exim gives up root altogether and runs as that
//!   user, which the configuration names as Exim's user (`exim_user`,
//!   `exim_group`) so that it is an administrator of its own spool.
//!
//! Exim must be installed: when it is not, [`Exim::new`] fails with a
//! message saying how to install it. These tests never pass by skipping.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Where Debian puts Exim.
pub const DEFAULT_BINARY: &str = "/usr/sbin/exim4";

/// One Exim installation of a test: its folder, configuration and spool.
pub struct Exim {
    dir: TempDir,
    binary: PathBuf,
    config: PathBuf,
}

/// A message to submit.
#[derive(Clone, Debug)]
pub struct Submission<'a> {
    /// The envelope sender; empty for a bounce (`<>`).
    pub sender: &'a str,
    /// The envelope recipients.
    pub recipients: &'a [&'a str],
    /// The body, after the headers the kit adds (`Subject`, `From`, `To`).
    pub body: &'a str,
}

impl Exim {
    /// Writes a configuration and creates a spool in a new temporary
    /// folder.
    ///
    /// # Panics
    ///
    /// When Exim is not installed, or the folder cannot be set up.
    pub fn new() -> Exim {
        let binary = std::env::var_os("EXIM_PILOT_EXIM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY));
        assert!(
            binary.is_file(),
            "Exim is not installed at {}: run `scripts/services.sh install` (which \
             scripts/test.sh runs) to install Debian's exim4-daemon-light, or set \
             EXIM_PILOT_EXIM to an Exim binary",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("exim-pilot-exim-")
            .tempdir()
            .expect("creating a folder for a test Exim");
        let config = dir.path().join("exim.conf");
        let exim = Exim {
            dir,
            binary,
            config,
        };
        exim.set_up();
        exim
    }

    /// The Exim binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The configuration file, for `-C`.
    pub fn config_file(&self) -> &Path {
        &self.config
    }

    /// The folder holding configuration, spool and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.dir().join("spool")
    }

    /// The main log's text so far (empty before Exim wrote to it).
    pub fn mainlog(&self) -> String {
        fs::read_to_string(self.dir().join("log/mainlog")).unwrap_or_default()
    }

    /// Runs Exim with the test configuration and `args`, standard input
    /// closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the test Exim")
    }

    /// `exim -bp`: the queue listing.
    pub fn bp(&self) -> String {
        let output = self.run(&["-bp"]);
        assert!(output.status.success(), "exim -bp failed: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `exim -bpc`: how many messages are queued.
    pub fn bpc(&self) -> u64 {
        let output = self.run(&["-bpc"]);
        assert!(output.status.success(), "exim -bpc failed: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("exim -bpc printed {text:?}"))
    }

    /// Submits one message and returns its id.
    pub fn submit(&self, message: &Submission<'_>) -> String {
        let ids = self.submit_all(std::slice::from_ref(message));
        ids.into_iter().next().expect("one id")
    }

    /// Submits `count` messages from `sender` to `recipients`, in one SMTP
    /// session, and returns their ids in order.
    pub fn submit_many(&self, count: usize, sender: &str, recipients: &[&str]) -> Vec<String> {
        let bodies: Vec<String> = (0..count).map(|i| format!("Message {i}.\n")).collect();
        let messages: Vec<Submission<'_>> = bodies
            .iter()
            .map(|body| Submission {
                sender,
                recipients,
                body,
            })
            .collect();
        self.submit_all(&messages)
    }

    /// Submits messages in one `exim -bs` session and returns their ids.
    pub fn submit_all(&self, messages: &[Submission<'_>]) -> Vec<String> {
        let mut session = String::from("HELO test.invalid\r\n");
        for message in messages {
            session.push_str(&smtp_transaction(message));
        }
        session.push_str("QUIT\r\n");

        let mut child = self
            .command(&["-bs"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running exim -bs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(session.as_bytes())
            .expect("writing the SMTP session");
        let output = child.wait_with_output().expect("waiting for exim -bs");
        let replies = String::from_utf8_lossy(&output.stdout);
        let ids: Vec<String> = replies
            .lines()
            .filter_map(|line| line.split("id=").nth(1))
            .map(|id| id.trim().to_string())
            .collect();
        assert_eq!(
            ids.len(),
            messages.len(),
            "exim -bs accepted {} of {} messages:\n{replies}\n{}",
            ids.len(),
            messages.len(),
            String::from_utf8_lossy(&output.stderr)
        );
        ids
    }

    /// Runs the whole queue once, frozen messages aside (`exim -qf`), and
    /// waits for it to end.
    pub fn queue_run(&self) {
        let output = self.run(&["-qf"]);
        assert!(output.status.success(), "exim -qf failed: {output:?}");
    }

    /// Makes message `id` look `seconds` older than it is, by moving the
    /// time of arrival in its spool header file back, so that `exim -bp`
    /// shows hours and days. Only for a message no Exim process works on.
    pub fn backdate(&self, id: &str, seconds: u64) {
        let path = self.spool().join("input").join(format!("{id}-H"));
        let text = fs::read_to_string(&path).expect("reading a spool header file");
        // Line 4 of a header file is `<arrival time> <warnings sent>`.
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        let (arrival, rest) = lines[3].split_once(' ').expect("arrival line");
        let arrival: u64 = arrival.parse().expect("arrival time");
        lines[3] = format!("{} {rest}", arrival - seconds);
        // Rewritten in place, so the file keeps its owner.
        fs::write(&path, lines.join("\n")).expect("writing a spool header file");
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("-C").arg(&self.config).args(args);
        command
    }

    fn set_up(&self) {
        let spool = self.spool();
        let log = self.dir().join("log");
        fs::create_dir(&spool).expect("creating the spool folder");
        fs::create_dir(&log).expect("creating the log folder");

        let user = EximUser::for_this_process(&self.binary);
        if let Some((uid, gid)) = user.ids_to_give {
            // Exim's user must reach its folders through the temporary one.
            fs::set_permissions(self.dir(), fs::Permissions::from_mode(0o711))
                .expect("opening the test folder to Exim's user");
            for folder in [&spool, &log] {
                std::os::unix::fs::chown(folder, Some(uid), Some(gid))
                    .expect("giving the spool and log folders to Exim's user");
            }
        }

        let closed_port = closed_port();
        let config = config_text(self.dir(), &user.user, &user.group, closed_port);
        fs::write(&self.config, config).expect("writing the test Exim configuration");
    }
}

impl Default for Exim {
    fn default() -> Exim {
        Exim::new()
    }
}

/// Who Exim runs as, and whose the folders must be.
struct EximUser {
    user: String,
    group: String,
    /// The uid and gid to give the spool and log folders to, when they are
    /// not the caller's own.
    ids_to_give: Option<(u32, u32)>,
}

impl EximUser {
    fn for_this_process(binary: &Path) -> EximUser {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid != 0 {
            return EximUser {
                user: user_name(uid),
                group: group_name(gid),
                ids_to_give: None,
            };
        }
        let output = Command::new(binary)
            .args(["-bP", "exim_user", "exim_group"])
            .output()
            .expect("asking Exim for its user");
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_prefix('=')
                        .map(str::trim)
                })
                .unwrap_or_else(|| panic!("exim -bP printed no {name}: {text}"))
                .to_string()
        };
        let (user, group) = (value("exim_user"), value("exim_group"));
        let ids = (user_id(&user), group_id(&group));
        EximUser {
            user,
            group,
            ids_to_give: Some(ids),
        }
    }
}

fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid returns null or a pointer to a static record that
    // stays valid until the next call; the name is copied out at once.
    unsafe {
        let entry = libc::getpwuid(uid);
        assert!(!entry.is_null(), "this process's user {uid} has no name");
        std::ffi::CStr::from_ptr((*entry).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn group_name(gid: u32) -> String {
    // SAFETY: as for getpwuid.
    unsafe {
        let entry = libc::getgrgid(gid);
        assert!(!entry.is_null(), "this process's group {gid} has no name");
        std::ffi::CStr::from_ptr((*entry).gr_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn user_id(name: &str) -> u32 {
    let c_name = std::ffi::CString::new(name).expect("a user name");
    // SAFETY: as for getpwuid; only the uid is read.
    unsafe {
        let entry = libc::getpwnam(c_name.as_ptr());
        assert!(!entry.is_null(), "Exim's user {name} does not exist");
        (*entry).pw_uid
    }
}

fn group_id(name: &str) -> u32 {
    let c_name = std::ffi::CString::new(name).expect("a group name");
    // SAFETY: as for getpwuid; only the gid is read.
    unsafe {
        let entry = libc::getgrnam(c_name.as_ptr());
        assert!(!entry.is_null(), "Exim's group {name} does not exist");
        (*entry).gr_gid
    }
}

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("its address").port()
}

fn smtp_transaction(message: &Submission<'_>) -> String {
    let mut text = format!("MAIL FROM:<{}>\r\n", message.sender);
    for recipient in message.recipients {
        text.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
    }
    text.push_str("DATA\r\n");
    text.push_str(&format!(
        "Subject: queue test\r\nFrom: <{}>\r\nTo: <{}>\r\n\r\n",
        message.sender,
        message.recipients.join(">, <")
    ));
    for line in message.body.lines() {
        // SMTP's dot-stuffing.
        if line.starts_with('.') {
            text.push('.');
        }
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str(".\r\n");
    text
}

fn config_text(dir: &Path, user: &str, group: &str, closed_port: u16) -> String {
    let dir = dir.display();
    format!(
        "\
# Written by exim-pilot's test kit: a queue-only Exim that reaches
# neither DNS nor the network.
exim_user = {user}
exim_group = {group}
primary_hostname = queue.test
qualify_domain = queue.test
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
pid_file_path = {dir}/exim.pid
local_interfaces = 127.0.0.1
queue_only = true
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
helo_lookup_domains =
dkim_verify_signers =
keep_environment =
acl_smtp_rcpt = accept_all

begin acl

accept_all:
  accept

begin routers

# Local parts starting with `done` are delivered, to nowhere.
delivered:
  driver = redirect
  local_parts = ^done
  data = :blackhole:

# Everything else goes to a closed loopback port and is deferred.
closed_port:
  driver = manualroute
  domains = *
  route_list = * 127.0.0.1::{closed_port}
  self = send
  transport = closed_port
  no_more

begin transports

closed_port:
  driver = smtp
  allow_localhost
  connect_timeout = 2s
  hosts_try_fastopen =
  hosts_try_dane =

begin retry

*   *   F,7d,1m
"
    )
}
