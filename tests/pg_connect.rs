//! End-to-end tests of how the runtime connects to PostgreSQL: the per-message byte cap on the
//! wire (with the agent's peak RSS), TLS in every `sslmode` against throwaway clusters with and
//! without `ssl = on` and a test CA made with the openssl CLI, and the `pg_stats` collector on
//! every installed PostgreSQL major.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pganalytics::config;
use pganalytics::pipeline;
use pganalytics::plugin::PluginHost;
use pganalytics_e2e::*;
use serde_json::Value;
use throwaway_pg::{ClusterOptions, TestCluster, installed_server_bins};

/// Counts the connection's own row in `pg_stat_ssl` with `ssl` true: `ok:1:1` (one row, value 1)
/// over TLS, `ok:0` in plaintext.
const USES_TLS: &str = "SELECT 1 FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl";

/// A `[plugins.probe]` running `statements` on `postgres` through the hostile_sql fixture (with
/// `cluster = true`: pg_stat_ssl is cluster-wide).
fn probe_plugin(statements: &[&str], extra: &str) -> String {
    sql_probe_plugin("probe", "postgres", "cluster = true", extra, statements)
}

/// Runs the probe in process with `postgres_section` and returns statement → outcome.
async fn probe(postgres_section: &str, statements: &[&str]) -> serde_json::Map<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{postgres_section}\n{}", probe_plugin(statements, ""));
    let config = config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
    let host = PluginHost::new(&config.host_setup()).unwrap();
    let collection = pipeline::collect_once(&config, &host, &[]).await;
    let failed: Vec<_> = collection.failures().collect();
    assert!(failed.is_empty(), "{failed:?}");
    let item = collection
        .envelope
        .items()
        .into_iter()
        .find(|i| i["results"].is_object())
        .expect("a probe item");
    item["results"].as_object().unwrap().clone()
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA and a server certificate it signed for `san` (e.g. `DNS:localhost`).
struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new(san: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-subj",
                    &format!("/CN=pganalytics test {name}"),
                    "-days",
                    "30",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(d.join("ext"), format!("subjectAltName={san}\n")).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "30",
                "-extfile",
                "ext",
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

fn expect_ok(results: &serde_json::Map<String, Value>, sql: &str, expected: &str, mode: &str) {
    assert_eq!(results[sql], expected, "{mode}: {sql}");
}

fn expect_unavailable(results: &serde_json::Map<String, Value>, mode: &str, needle: &str) {
    let got = results[USES_TLS].as_str().unwrap();
    assert!(
        got.starts_with("unavailable: ") && got.contains(needle),
        "{mode}: expected a connection error containing {needle:?}, got {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_a_server_with_tls() {
    // The certificate names only `localhost`: 127.0.0.1 is a wrong host name for it.
    let pki = TestPki::new("DNS:localhost");
    let (cert, key) = (pki.read("server.crt"), pki.read("server.key"));
    let cluster = TestCluster::start_with(ClusterOptions {
        tls: Some((&cert, &key)),
        ..ClusterOptions::default()
    });
    let ca = pki.path("ca.crt").display().to_string();
    let other_ca = pki.path("other-ca.crt").display().to_string();
    let section = |host: &str, extra: String| cluster.postgres_section_tcp(host, &extra);

    for (host, extra, expected) in [
        (
            "localhost",
            format!("sslmode = \"verify-full\"\nsslrootcert = {ca:?}"),
            "ok:1:1",
        ),
        (
            "127.0.0.1",
            format!("sslmode = \"verify-ca\"\nsslrootcert = {ca:?}"),
            "ok:1:1",
        ),
        // libpq: require with a root certificate verifies the chain (not the name).
        (
            "127.0.0.1",
            format!("sslmode = \"require\"\nsslrootcert = {ca:?}"),
            "ok:1:1",
        ),
        ("127.0.0.1", "sslmode = \"require\"".to_owned(), "ok:1:1"),
        ("127.0.0.1", "sslmode = \"prefer\"".to_owned(), "ok:1:1"),
        ("127.0.0.1", String::new(), "ok:1:1"),
        ("127.0.0.1", "sslmode = \"disable\"".to_owned(), "ok:0"),
    ] {
        let results = probe(&section(host, extra.clone()), &[USES_TLS, "SELECT 1"]).await;
        expect_ok(&results, USES_TLS, expected, &format!("{host} {extra}"));
        expect_ok(&results, "SELECT 1", "ok:1:1", &format!("{host} {extra}"));
    }

    let results = probe(
        &section(
            "127.0.0.1",
            format!("sslmode = \"verify-full\"\nsslrootcert = {ca:?}"),
        ),
        &[USES_TLS],
    )
    .await;
    expect_unavailable(&results, "verify-full, wrong host name", "verify-full");
    expect_unavailable(
        &results,
        "verify-full, wrong host name",
        "not valid for name",
    );

    for mode in ["verify-full", "verify-ca", "require"] {
        let results = probe(
            &section(
                "localhost",
                format!("sslmode = {mode:?}\nsslrootcert = {other_ca:?}"),
            ),
            &[USES_TLS],
        )
        .await;
        expect_unavailable(&results, &format!("{mode}, another CA"), "UnknownIssuer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_unless_tls_is_only_preferred() {
    let pki = TestPki::new("DNS:localhost");
    let cluster = TestCluster::start_with(ClusterOptions {
        tcp: true,
        ..ClusterOptions::default()
    });
    let ca = pki.path("ca.crt").display().to_string();
    for (extra, expected) in [
        ("sslmode = \"prefer\"", "ok:0"),
        ("sslmode = \"disable\"", "ok:0"),
    ] {
        let results = probe(
            &cluster.postgres_section_tcp("127.0.0.1", extra),
            &[USES_TLS],
        )
        .await;
        expect_ok(&results, USES_TLS, expected, extra);
    }
    for extra in [
        "sslmode = \"require\"".to_owned(),
        format!("sslmode = \"verify-full\"\nsslrootcert = {ca:?}"),
    ] {
        let results = probe(
            &cluster.postgres_section_tcp("localhost", &extra),
            &[USES_TLS],
        )
        .await;
        expect_unavailable(&results, &extra, "does not accept TLS connections");
    }
}

/// Peak RSS of a finished child, from wait4.
fn wait_peak_rss_kib(child: &std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: pid is our child, not yet reaped; the pointers are valid for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    (status, usage.ru_maxrss)
}

#[test]
fn a_value_larger_than_the_per_call_limit_is_refused_on_the_wire_and_memory_stays_small() {
    let cluster = TestCluster::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let huge = "SELECT repeat('x', 200*1024*1024)";
    let wide = "SELECT repeat('x', 3*1024*1024)";
    let body = format!(
        "{}\n{}",
        cluster.postgres_section(),
        probe_plugin(
            &[huge, wide, "SELECT 1"],
            "timeout = \"60s\"\nmax_host_call_bytes = \"4MiB\""
        )
    );
    let config = write_config(dir.path(), &body);
    // Reaped by `wait_peak_rss_kib` (wait4, for its peak RSS), which clippy does not see.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(binary())
        .args(["collect", "--once", "--config", config.to_str().unwrap()])
        .env(
            "PGANALYTICS_LOG",
            std::env::var("PGANALYTICS_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    let mut err_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    stderr.push_str(&err_thread.join().unwrap());
    let (status, peak_kib) = wait_peak_rss_kib(&child);
    assert_eq!(status, 0, "collect failed: {stderr}");
    let envelope: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let results = envelope["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["results"].is_object())
        .unwrap_or_else(|| panic!("no probe item: {stdout}"))["results"]
        .clone();
    let refused = results[huge].as_str().unwrap();
    assert!(
        refused.starts_with("too-large: ")
            && refused.contains(&format!(
                "message of {} bytes",
                200 * 1024 * 1024 + 4 + 2 + 5
            )),
        "{refused}\n{stderr}"
    );
    // Under the limit, and the connection after the refusal is a fresh one.
    let wide_result = results[wide].as_str().unwrap();
    assert!(
        wide_result.starts_with("ok:1:xxx") && wide_result.len() == "ok:1:".len() + 3 * 1024 * 1024,
        "{}",
        &wide_result[..wide_result.len().min(200)]
    );
    assert_eq!(results["SELECT 1"], "ok:1:1");
    let peak_mib = peak_kib / 1024;
    eprintln!("peak RSS of the agent: {peak_mib} MiB");
    assert!(
        peak_mib < 150,
        "the agent's peak RSS was {peak_mib} MiB for a refused 200 MiB value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stats_runs_on_every_installed_major() {
    let majors = installed_server_bins();
    assert!(
        !majors.is_empty(),
        "no PostgreSQL under /usr/lib/postgresql"
    );
    for (major, bin) in majors {
        let cluster = TestCluster::start_with(ClusterOptions {
            bin: Some(bin),
            ..ClusterOptions::default()
        });
        assert_eq!(cluster.major(), Some(major));
        cluster.psql("postgres", "CREATE EXTENSION pg_stat_statements");
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "{}\n{}",
            cluster.postgres_section(),
            pg_stats_plugin("[\"postgres\"]", "")
        );
        let config =
            config::load(&write_config(dir.path(), &body)).unwrap_or_else(|e| panic!("{e}"));
        let host = PluginHost::new(&config.host_setup()).unwrap();
        let collection = pipeline::collect_once(&config, &host, &[]).await;
        let failed: Vec<_> = collection.failures().collect();
        assert!(failed.is_empty(), "PostgreSQL {major}: {failed:?}");
        let server = collection
            .envelope
            .items()
            .into_iter()
            .find(|i| i["type"] == "pg_server")
            .unwrap_or_else(|| panic!("PostgreSQL {major}: no pg_server item"));
        let item = server.to_string();
        assert!(
            item.contains(&format!("\"server_version_num\":{major}")),
            "PostgreSQL {major}: the pg_server item has another version: {item}"
        );
        eprintln!("PostgreSQL {major}: pg_stats ok");
    }
}
