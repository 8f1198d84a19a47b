//! A throwaway PostgreSQL cluster for the tests and the demo: initdb into a temp dir, a server on
//! a unix socket in that dir (no TCP), stopped and deleted on drop. As root, initdb and the
//! server run as the `postgres` user (initdb refuses root). It never touches a server that
//! happens to be running. [`ClusterOptions`] picks the major version, and can add a TCP
//! listener on 127.0.0.1 with or without TLS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Extra `-c name=value` server settings.
    settings: Vec<String>,
    /// `listen_addresses`: empty (unix socket only) or `127.0.0.1`.
    listen: &'static str,
}

/// How [`TestCluster::start_with`] starts a cluster.
#[derive(Default)]
pub struct ClusterOptions<'a> {
    /// Server binaries (`/usr/lib/postgresql/N/bin`); the newest installed when `None`.
    pub bin: Option<PathBuf>,
    /// `name=value` settings on the server command line.
    pub settings: &'a [&'a str],
    /// Also listen on TCP 127.0.0.1 (trust authentication, as the unix socket).
    pub tcp: bool,
    /// `ssl = on` with this certificate chain and key (PEM); implies `tcp`.
    pub tls: Option<(&'a str, &'a str)>,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed PostgreSQL server binaries.
pub fn server_bin() -> Option<PathBuf> {
    installed_server_bins().pop().map(|(_, bin)| bin)
}

/// Every installed PostgreSQL major with its server binaries, oldest first.
pub fn installed_server_bins() -> Vec<(u32, PathBuf)> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (cargo xtask test installs them)",
        )
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    let mut majors: Vec<(u32, PathBuf)> = candidates
        .drain(..)
        .filter_map(|p| {
            let major = p
                .parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())?;
            Some((major, p))
        })
        .collect();
    majors.sort();
    majors
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
        Self::start_with(ClusterOptions {
            settings,
            ..ClusterOptions::default()
        })
    }

    /// Starts a cluster as [`Self::start`] does, with the version, TCP and TLS of `options`.
    pub fn start_with(options: ClusterOptions<'_>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pganalytics-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut settings: Vec<String> = options.settings.iter().map(|s| s.to_string()).collect();
        if let Some((cert, key)) = options.tls {
            let cert_path = dir.path().join("server.crt");
            let key_path = dir.path().join("server.key");
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file='{}'", cert_path.display()));
            settings.push(format!("ssl_key_file='{}'", key_path.display()));
        }
        let cluster = Self {
            bin: options.bin.or_else(server_bin).expect("PostgreSQL server binaries under /usr/lib/postgresql/*/bin (cargo xtask test installs them)"),
            port: free_port(),
            settings,
            listen: if options.tcp || options.tls.is_some() {
                "127.0.0.1"
            } else {
                ""
            },
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

    /// The major version of the server binaries.
    pub fn major(&self) -> Option<u32> {
        self.bin
            .parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok())
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
            "-c port={} -c listen_addresses='{}' -c unix_socket_directories='{}' -c log_directory='{}' -c shared_preload_libraries=pg_stat_statements -c fsync=off",
            self.port,
            self.listen,
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

impl TestCluster {
    /// The `[postgres]` section that reaches this cluster over TCP at `host` (which must be
    /// `127.0.0.1` or `localhost`) with `extra` lines (sslmode, sslrootcert...).
    pub fn postgres_section_tcp(&self, host: &str, extra: &str) -> String {
        format!(
            "[postgres]\nhost = {host:?}\nport = {}\nuser = \"pganalytics\"\n{extra}\n",
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
