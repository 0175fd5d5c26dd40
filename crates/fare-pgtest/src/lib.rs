//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary
//! directory, `pg_ctl start` listening on a Unix socket only (no TCP port is
//! opened; the port number only names the socket), removed when dropped.
//!
//! Binaries are Debian's `postgresql` package: found on `PATH` (`initdb`,
//! `pg_ctl`, `createdb`) or in `/usr/lib/postgresql/<version>/bin` (newest
//! version first). PostgreSQL refuses to run as root, so when the tests run
//! as root (CI does) the cluster is created and run as an unprivileged user
//! (`postgres` when it exists, else `nobody`) by setting the child's uid and
//! gid: no `sudo`/`runuser` needed.
//!
//! When PostgreSQL is not installed, [`PgCluster::start`] returns `None`
//! after printing how to install it and that the test is skipped, unless
//! `FARE_REQUIRE_POSTGRES=1` (set by `.ci/run`), where it panics: CI never
//! skips a PostgreSQL test.
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable that turns a missing PostgreSQL into a failure.
pub const REQUIRE_ENV: &str = "FARE_REQUIRE_POSTGRES";
/// Where Debian installs the server binaries, one directory per version.
pub const DEBIAN_LIB_DIR: &str = "/usr/lib/postgresql";
/// The cluster's superuser (created by `initdb`; trust authentication on
/// the socket, which only the cluster's owner and root can reach).
pub const SUPERUSER: &str = "fare";

/// Where the PostgreSQL binaries are.
#[derive(Clone, Debug)]
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Finds `initdb`, `pg_ctl` and `createdb` in one directory: `PATH`
    /// first, then `/usr/lib/postgresql/<newest>/bin`.
    pub fn find() -> Option<PgBin> {
        let has_all = |d: &Path| {
            ["initdb", "pg_ctl", "createdb"]
                .iter()
                .all(|b| d.join(b).is_file())
        };
        let from_path = std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p).find_map(|d| {
                // PATH often holds symlinks (`/usr/local/bin/initdb`):
                // the real directory has all three.
                let real = std::fs::canonicalize(d.join("initdb")).ok()?;
                let dir = real.parent()?.to_path_buf();
                has_all(&dir).then_some(dir)
            })
        });
        if let Some(dir) = from_path {
            return Some(PgBin { dir });
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB_DIR)
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                has_all(&bin).then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| PgBin { dir })
    }

    /// A binary of this installation.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The uid/gid the cluster runs as: ours unless we are root.
fn cluster_owner() -> Option<(u32, u32)> {
    let meta = std::fs::metadata("/proc/self").ok()?;
    if std::os::unix::fs::MetadataExt::uid(&meta) != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let lookup = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
    };
    for name in ["postgres", "nobody"] {
        if let Some((Some(uid), Some(gid))) = lookup(name) {
            return Some((uid, gid));
        }
    }
    // No such users: the conventional `nobody`.
    Some((65534, 65534))
}

/// A running throwaway cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PgBin,
    owner: Option<(u32, u32)>,
    dir: tempfile::TempDir,
    port: u16,
    databases: AtomicU32,
    /// The server's options (`pg_ctl -o`), kept for [`PgCluster::start_again`].
    opts: String,
}

impl PgCluster {
    /// Starts a cluster, or `None` (test skipped, with how to install
    /// PostgreSQL printed) when PostgreSQL is missing and not required.
    ///
    /// # Panics
    /// When PostgreSQL is missing and `FARE_REQUIRE_POSTGRES=1`, or when the
    /// cluster fails to start (with the server log).
    pub fn start() -> Option<PgCluster> {
        Self::start_with_settings(&[])
    }

    /// [`PgCluster::start`] with extra server settings (`name`, `value`),
    /// e.g. a benchmark's `shared_buffers`. Durability settings (`fsync`,
    /// `synchronous_commit`) are PostgreSQL's defaults unless given here.
    ///
    /// # Panics
    /// As [`PgCluster::start`].
    pub fn start_with_settings(settings: &[(&str, &str)]) -> Option<PgCluster> {
        let Some(bin) = PgBin::find() else {
            let how = "PostgreSQL not found (no initdb/pg_ctl/createdb on PATH nor in /usr/lib/postgresql/*/bin): \
                       install it with `apt-get install postgresql`";
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{how} ({REQUIRE_ENV}=1: PostgreSQL tests must run)");
            }
            eprintln!("SKIPPED: {how}");
            return None;
        };
        Some(Self::start_with(bin, settings))
    }

    fn start_with(bin: PgBin, settings: &[(&str, &str)]) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("fare-pgtest-")
            .tempdir()
            .expect("temp dir");
        let owner = cluster_owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let mut c = PgCluster {
            bin,
            owner,
            dir,
            port: free_port(),
            databases: AtomicU32::new(0),
            opts: String::new(),
        };
        c.run_ok(
            "initdb",
            &[
                "-D",
                &c.data_dir(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        // Unix socket only, in the cluster's own directory.
        let mut opts = format!(
            "-c listen_addresses='' -k {} -p {} -c max_connections=200 -c shared_buffers=64MB",
            c.socket_dir(),
            c.port
        );
        for (name, value) in settings {
            // Later settings win: these override the defaults above.
            opts.push_str(&format!(" -c {name}={value}"));
        }
        c.opts = opts;
        c.start_again();
        c
    }

    /// Starts the server of a cluster [`PgCluster::stop`] stopped (same
    /// settings, same data).
    ///
    /// # Panics
    /// When it does not start (with the server log).
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log");
        self.run_ok(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log.display().to_string(),
                "-o",
                &self.opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server at once (`-m immediate`: as if it crashed); its
    /// clients' connections break. [`PgCluster::start_again`] restarts it.
    ///
    /// # Panics
    /// When `pg_ctl` fails.
    pub fn stop(&self) {
        self.run_ok(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }

    /// The cluster's data directory (its size is the database's on disk).
    pub fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The postmaster's process id (`postmaster.pid`): with its children,
    /// the server's CPU time can be read from `/proc`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    /// The port number naming the socket (`.s.PGSQL.<port>`).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.path(name));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        // LC_ALL=C: no locale surprises in initdb; bytea ordering is bytewise anyway.
        cmd.env("LC_ALL", "C").current_dir(self.dir.path());
        cmd
    }

    fn run_ok(&self, name: &str, args: &[&str]) -> Output {
        let out = self
            .command(name)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            panic!(
                "{name} {args:?} failed ({}):\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// Creates a fresh database and returns its connection string
    /// (`postgresql://fare@/NAME?host=SOCKET_DIR&port=PORT`).
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("fare_test_{n}");
        self.run_ok(
            "createdb",
            &[
                "-h",
                &self.socket_dir(),
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                &name,
            ],
        );
        self.url(&name)
    }

    /// The connection string of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgresql://{SUPERUSER}@/{name}?host={}&port={}",
            self.socket_dir(),
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: the data is thrown away anyway; the temp dir goes next.
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A port number no TCP listener uses now (the socket's name only; unique
/// per cluster so that clusters of parallel tests never share a socket).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_a_database_and_is_removed() {
        let Some(c) = PgCluster::start() else { return };
        let dir = c.dir.path().to_path_buf();
        let url = c.create_database();
        assert!(url.contains("fare_test_0"), "{url}");
        let sock = dir.join(format!(".s.PGSQL.{}", c.port()));
        assert!(sock.exists(), "socket {} missing", sock.display());
        let second = c.create_database();
        assert_ne!(url, second);
        drop(c);
        assert!(!dir.exists(), "cluster dir {} left behind", dir.display());
    }
}
