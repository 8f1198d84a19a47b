//! End-to-end tests of the file capabilities (`procfs`, `log-tail`) through the real sandbox:
//! a careless grant (`**`) still gives no link, secret or blocking file away, and a file that
//! would block (a FIFO swapped in for a log, `kmsg`) never stalls the agent or another plugin.

use std::collections::BTreeMap;
use std::path::Path;

use pganalytics::config;
use pganalytics::pipeline::{self, Collection, Outcome};
use pganalytics::plugin::PluginHost;
use pganalytics_e2e::*;
use serde_json::Value;

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A `hostile_files` plugin named `name` probing `paths` through a procfs grant of `grant`,
/// and calling log-tail once on `logs`.
fn probe(name: &str, grant: &[&str], paths: &[&str], logs: &Path, extra: &str) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{}[plugins.{name}.grants.procfs]\npaths = [{}]\n[plugins.{name}.grants.log-tail]\npaths = [\"{}/*.log\"]\nstart_at = \"beginning\"\n[plugins.{name}.settings]\nprocfs = [{}]\nlog_tail = true\n",
        plugin(name, "hostile_files", "probe", extra),
        list(grant),
        logs.display(),
        list(paths),
    )
}

async fn collect(dir: &Path, body: &str) -> Collection {
    let path = write_config(dir, body);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let host = PluginHost::new(&config.host_setup()).unwrap();
    pipeline::collect_once(&config, &host, &[]).await
}

fn probe_item(collection: &Collection, name: &str) -> Value {
    let outcomes: BTreeMap<&str, &Outcome> = collection
        .outcomes
        .iter()
        .map(|(n, o)| (n.as_str(), o))
        .collect();
    match outcomes[name] {
        Outcome::Accepted(_) => {}
        Outcome::LoadFailed(e) => panic!("{name}: {e}"),
        Outcome::RunFailed(e) => panic!("{name}: {e}"),
    }
    collection
        .envelope
        .items()
        .into_iter()
        .find(|m| m["type"] == "probe")
        .unwrap_or_else(|| panic!("no probe item"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_procfs_grant_reaches_no_link_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // The plugin runs in this process: `self` is this test, so these entries exist.
    let map_file = std::fs::read_dir("/proc/self/map_files")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let map_file = format!("self/map_files/{}", map_file.to_string_lossy());
    let task = format!("self/task/{}/environ", std::process::id());
    let task_root = format!("self/task/{}/root/etc/passwd", std::process::id());
    let denied = [
        "self/environ",
        task.as_str(),
        task_root.as_str(),
        "self/mem",
        "self/root/etc/passwd",
        "self/cwd/Cargo.toml",
        "self/exe",
        "self/fd/0",
        "self/fd/2",
        map_file.as_str(),
        "1/root/etc/passwd",
        "1/environ",
        "thread-self/stat",
        "thread-self/environ",
        "../etc/passwd",
        "/etc/passwd",
    ];
    let mut paths = denied.to_vec();
    paths.push("stat");
    paths.push("self/status");
    let body = probe("files", &["**"], &paths, &logs, "");
    let collection = collect(dir.path(), &body).await;
    let item = probe_item(&collection, "files");
    let results = &item["procfs"];
    for path in denied {
        let result = results[path].as_str().unwrap_or_default();
        assert!(result.starts_with("denied"), "{path}: {result}");
        assert!(!result.contains("resolves"), "{path}: {result}");
    }
    for path in ["stat", "self/status"] {
        let result = results[path].as_str().unwrap_or_default();
        assert!(result.starts_with("ok:"), "{path}: {result}");
    }
    // `read-many` gives every path the answer `read` gave it (sizes of live files aside).
    let many = &item["procfs_many"];
    for path in &paths {
        let (one, batch) = (results[path].as_str(), many[path].as_str());
        match one {
            Some(one) if one.starts_with("ok:") => {
                assert!(
                    batch.is_some_and(|b| b.starts_with("ok:")),
                    "{path}: {batch:?}"
                )
            }
            _ => assert_eq!(batch, one, "{path}"),
        }
    }
    let over = item["procfs_many_17"].as_str().unwrap_or_default();
    assert!(
        over.starts_with("invalid: ") && over.contains("at most 16"),
        "{over}"
    );
}

/// A log swapped for a FIFO and a granted `kmsg` (whose plain read waits for the next kernel
/// message) must neither stall the probing plugin past its deadline nor keep sysstat from
/// delivering in the same collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_log_and_kmsg_stall_neither_the_plugin_nor_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("postgresql.log"), "before\n").unwrap();
    std::fs::write(
        logs.join("postgresql.log.2.gz"),
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00garbage\n",
    )
    .unwrap();
    std::fs::remove_file(logs.join("postgresql.log")).unwrap();
    mkfifo(&logs.join("postgresql.log"));
    std::fs::write(logs.join("other.log"), "other\n").unwrap();
    let body = format!(
        "{}{SYSSTAT_GRANTS}{}",
        plugin("sysstat", "sysstat", "sysstat", ""),
        probe("files", &["kmsg"], &["kmsg"], &logs, "timeout = \"3s\""),
    );
    let collection = collect(dir.path(), &body).await;
    let item = probe_item(&collection, "files");
    let kmsg = item["procfs"]["kmsg"].as_str().unwrap_or_default();
    assert!(!kmsg.starts_with("timeout"), "{kmsg}");
    // The FIFO is refused, the gzip file skipped, the text file read.
    assert_eq!(item["log_tail"], "ok:1:other\n");
    let items = collection.envelope.items();
    let types: Vec<&str> = items.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"sysstat"), "{types:?}");
}
