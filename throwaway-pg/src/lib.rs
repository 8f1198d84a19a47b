//! A throwaway PostgreSQL cluster for the tests and the demo: initdb into a temp dir, a server on
//! a unix socket in that dir (no TCP), stopped and deleted on drop. As root, initdb and the
//! server run as the `postgres` user (initdb refuses root). It never touches a server that
//! happens to be running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed PostgreSQL server binaries.
pub fn server_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (cargo xtask test installs them)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    candidates.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestCluster {
    /// Starts a cluster with pg_stat_statements loaded, a `pganalytics` role with pg_monitor,
    /// and `settings` (`name=value`) on the server command line.
    pub fn start(settings: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pganalytics-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let cluster = Self {
            bin: server_bin().expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin (cargo xtask test installs them)"),
            port: free_port(),
            settings: settings.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        std::fs::create_dir_all(cluster.log_dir()).unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        cluster.as_server_user(
            &cluster.bin.join("initdb"),
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        cluster.pg_ctl("start");
        cluster.psql(
            "postgres",
            "CREATE ROLE pganalytics LOGIN; GRANT pg_monitor TO pganalytics;",
        );
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The unix socket directory, usable as `host` by libpq and tokio-postgres.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn as_server_user(&self, program: &Path, args: &[&str]) -> Output {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn pg_ctl(&self, action: &str) {
        let mut options = format!(
            "-c port={} -c listen_addresses='' -c unix_socket_directories='{}' -c log_directory='{}' -c shared_preload_libraries=pg_stat_statements -c fsync=off",
            self.port,
            self.socket_dir().display(),
            self.log_dir().display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = self.dir.path().join("server.log");
        self.as_server_user(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                action,
            ],
        );
    }

    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// Runs SQL as the superuser with psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        match self.try_psql(database, sql) {
            Ok(output) => output,
            Err(error) => panic!("psql {sql}: {error}"),
        }
    }

    /// Like [`Self::psql`], for statements expected to fail (their errors end up in the log).
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// The `[postgres]` section that points the runtime at this cluster.
    pub fn postgres_section(&self) -> String {
        format!(
            "[postgres]\nhost = {:?}\nport = {}\nuser = \"pganalytics\"\nsslmode = \"disable\"\n",
            self.socket_dir().display().to_string(),
            self.port
        )
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = command
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
