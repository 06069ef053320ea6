//! Test support: real servers for fleet mode's tests, and a real Exim.
//!
//! Each [`Server`] is a real process started by `scripts/services.sh` (the
//! same script `scripts/test.sh` and `.ci/run` use to install the tools) in
//! a temporary folder, on a free loopback port: a Kafka-protocol broker
//! (`tansu`, SQLite storage) or Debian's ClickHouse server. A test owns its
//! servers, so it may stop one for a while and start it again on the same
//! port with the same data, as an outage would; dropping the server stops
//! it and removes its folder.
//!
//! The tools must be installed (`scripts/services.sh install`, which
//! `scripts/test.sh` runs first). When they are not, starting a server
//! fails with a message saying so: these tests never pass by skipping.
//!
//! [`exim::Exim`] is Debian's Exim binary, also installed by
//! `scripts/services.sh install`, run with a configuration and spool of
//! its own in a temporary folder, for the queue tests; it starts no
//! daemon.

pub mod exim;
#[cfg(feature = "kafka")]
pub mod kafka;

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Kafka-protocol broker; its address is `127.0.0.1:PORT`.
    Kafka,
    /// A ClickHouse server; its address is `http://127.0.0.1:PORT`.
    ClickHouse,
}

impl Kind {
    fn as_arg(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::ClickHouse => "clickhouse",
        }
    }
}

/// A server process owned by a test.
pub struct Server {
    kind: Kind,
    dir: TempDir,
    address: String,
    running: bool,
}

/// The repository's `scripts/services.sh`.
pub fn services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test kit lives inside the workspace")
        .join("scripts/services.sh")
}

impl Server {
    /// Starts a server of this kind in a new temporary folder.
    ///
    /// # Panics
    ///
    /// When the server does not start, with the script's explanation.
    pub fn start(kind: Kind) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("exim-pilot-{}-", kind.as_arg()))
            .tempdir()
            .expect("creating a folder for a test server");
        let mut server = Server {
            kind,
            dir,
            address: String::new(),
            running: false,
        };
        server.resume();
        server
    }

    /// A Kafka-protocol broker.
    pub fn kafka() -> Server {
        Server::start(Kind::Kafka)
    }

    /// A ClickHouse server.
    pub fn clickhouse() -> Server {
        Server::start(Kind::ClickHouse)
    }

    /// Where clients reach it.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The folder holding its data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server, keeping its data, as an outage would.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let status = Command::new(services_script())
            .arg("stop")
            .arg(self.dir.path())
            .status()
            .expect("running scripts/services.sh stop");
        assert!(status.success(), "scripts/services.sh stop failed");
        self.running = false;
    }

    /// Starts the server again after [`Server::stop`], with the same data
    /// and, when it is still free, the same port.
    ///
    /// # Panics
    ///
    /// When it does not start, or comes back on another port.
    pub fn resume(&mut self) {
        if self.running {
            return;
        }
        let output = Command::new(services_script())
            .arg("start")
            .arg(self.kind.as_arg())
            .arg(self.dir.path())
            .output()
            .expect("running scripts/services.sh start");
        assert!(
            output.status.success(),
            "could not start a {:?} server for the test (install the tools with \
             `scripts/services.sh install`, which scripts/test.sh runs):\n{}",
            self.kind,
            String::from_utf8_lossy(&output.stderr)
        );
        let address = String::from_utf8_lossy(&output.stdout).trim().to_string();
        // Running from here on, so that a failed check below still stops it.
        self.running = true;
        assert!(
            self.address.is_empty() || self.address == address,
            "the {:?} server came back on {address}, not {}",
            self.kind,
            self.address
        );
        self.address = address;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(services_script())
                .arg("stop")
                .arg(self.dir.path())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clickhouse_starts_stops_and_resumes_on_its_port() {
        let mut server = Server::clickhouse();
        let address = server.address().to_string();
        assert!(address.starts_with("http://127.0.0.1:"), "{address}");
        server.stop();
        server.resume();
        assert_eq!(server.address(), address);
    }

    #[test]
    fn kafka_starts_stops_and_resumes_on_its_port() {
        let mut server = Server::kafka();
        let address = server.address().to_string();
        assert!(address.starts_with("127.0.0.1:"), "{address}");
        server.stop();
        server.resume();
        assert_eq!(server.address(), address);
    }
}
