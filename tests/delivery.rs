//! `pganalytics run` end to end against the HTTPS test backend (`test-backend`, 127.0.0.1 only):
//! registration, mTLS, token refresh, outages, SIGKILL, a full spool, dead letters, TLS errors,
//! config pull, SIGHUP and plugin file swaps.
//!
//! Most tests count `tick` items of the `ticker` fixture: its run number `seq` moves on only once
//! a run is spooled, so a gap in what the backend received is a lost batch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pganalytics_e2e::{binary, plugin, wasm};
use test_backend::{BackendConfig, TestBackend, agent_get, agent_metric, free_loopback_port};

/// A running agent process, its stderr in `log`.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path) -> Agent {
        let dir = config.parent().unwrap();
        let log = dir.join(format!(
            "agent-{}.log",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(binary())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("PGANALYTICS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting the agent");
        Agent { child, log }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains one of `needles`; on timeout, fails showing the log.
    async fn wait_for_log(&self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if needles.iter().any(|n| log.contains(n)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {needles:?} in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the process to exit and returns its exit code (None when killed by a signal).
    async fn exit(mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        // Before its handlers are installed, SIGTERM would just kill it.
        self.wait_for_log(&["agent running"], Duration::from_secs(30))
            .await;
        self.signal(libc::SIGTERM);
        let log = self.log.clone();
        let code = self.exit(Duration::from_secs(20)).await;
        assert_eq!(
            code,
            Some(0),
            "SIGTERM exits 0; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `seq` of every first `tick` item of each batch received, in arrival order.
fn seqs(backend: &TestBackend) -> Vec<u64> {
    backend
        .metrics_of_type("tick")
        .iter()
        .filter(|m| m["index"] == 0)
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// The last `seq` the ticker committed: its state blob, JSON after the state file's 20-byte
/// header (see `host::state`).
fn committed_seq(state_dir: &Path, plugin: &str) -> u64 {
    std::fs::read(state_dir.join("plugins").join(format!("{plugin}.state")))
        .map(|bytes| {
            std::str::from_utf8(&bytes[20..])
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .unwrap_or(0)
}

/// A test directory with the backend's CA and secrets written out.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(backend: &TestBackend) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), backend.ca_pem()).unwrap();
        std::fs::write(dir.path().join("jwt_secret"), backend.jwt_secret()).unwrap();
        std::fs::write(
            dir.path().join("registration_secret"),
            backend.registration_secret(),
        )
        .unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// Writes `config.toml`: `[collector]` (with `extra_collector` lines), `[backend]` on `url`
    /// with `auth` lines, `[tls]` with the CA, and `plugins`.
    fn config(&self, url: &str, auth: &str, extra: &str, plugins: &str) -> PathBuf {
        let path = self.path("config.toml");
        let text = format!(
            "[collector]\nid = \"agent-under-test\"\nstate_dir = {state:?}\n\n\
             [backend]\nurl = {url:?}\npush_interval = \"300ms\"\nconfig_pull_interval = \"500ms\"\n{auth}\n\n\
             [tls]\nca_file = {ca:?}\n\n{extra}\n{plugins}",
            state = self.state().display().to_string(),
            ca = self.path("ca.pem").display().to_string(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn shared_secret(&self) -> String {
        format!(
            "jwt_secret_file = {:?}",
            self.path("jwt_secret").display().to_string()
        )
    }

    fn registration(&self) -> String {
        format!(
            "registration_secret_file = {:?}",
            self.path("registration_secret").display().to_string()
        )
    }
}

fn ticker(name: &str, interval: &str, extra: &str) -> String {
    plugin(
        name,
        "ticker",
        "tick",
        &format!("interval = {interval:?}\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_pushes_over_mtls_refreshes_and_reports_health() {
    let backend = TestBackend::start(BackendConfig {
        accept_gzip: true,
        require_client_cert: true,
        token_lifetime: Duration::from_secs(6),
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let (cert, key) = backend.client_cert_for("db1.example");
    std::fs::write(setup.path("client.pem"), cert).unwrap();
    std::fs::write(setup.path("client.key"), key).unwrap();
    let port = free_loopback_port();
    let config = setup.config(
        &backend.url(),
        &setup.registration(),
        "[buffer]\nmax_bytes = \"1MiB\"\n",
        &ticker("ticker", "200ms", ""),
    );
    // mTLS from [tls] and a health listener.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "[tls]\n",
            &format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                setup.path("client.pem").display().to_string(),
                setup.path("client.key").display().to_string()
            ),
        )
        .replace(
            "[collector]\n",
            &format!("[collector]\nlisten = \"127.0.0.1:{port}\"\n"),
        );
    std::fs::write(&config, text).unwrap();

    let agent = Agent::start(&config);
    wait_until("a token refresh", Duration::from_secs(30), || {
        backend
            .requests()
            .iter()
            .any(|r| r.path == "/api/v1/collectors/refresh-token" && r.status == 200)
    })
    .await;
    wait_until(
        "batches pushed with the refreshed token",
        Duration::from_secs(30),
        || backend.batches().len() >= 5,
    )
    .await;
    let registrations = backend.registrations();
    assert_eq!(registrations.len(), 1, "registered once, then refreshed");
    let id = &registrations[0].collector_id;
    for batch in backend.batches() {
        assert_eq!(&batch.envelope["collector_id"], id.as_str());
        assert_eq!(batch.token_collector_id, *id);
        assert!(batch.gzipped);
        assert_eq!(batch.client_cn.as_deref(), Some("db1.example"));
        assert!(
            batch
                .header("authorization")
                .unwrap()
                .starts_with("Bearer ")
        );
    }
    // The identity is kept owner-only and holds no secret in the log.
    use std::os::unix::fs::PermissionsExt;
    let identity = setup.state().join("identity/identity.json");
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&identity).unwrap()).unwrap();
    let token = saved["token"].as_str().unwrap();
    assert!(!agent.log().contains(token), "tokens never reach the log");
    assert!(
        !agent
            .log()
            .contains(test_backend::DEFAULT_REGISTRATION_SECRET)
    );

    let health = agent_get(port, "/healthz").expect("the health listener answers");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let sent = agent_metric(port, "pganalytics_batches_sent_total").unwrap();
    assert!(sent >= 5.0, "sent {sent}");
    assert!(agent_metric(port, "pganalytics_collections_total{plugin=\"ticker\"}").unwrap() >= 5.0);
    assert!(agent_metric(port, "pganalytics_push_latency_seconds_count").unwrap() >= 5.0);
    agent.stop().await;

    // Seqs arrived in order, each once.
    let seqs = seqs(&backend);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_loses_and_repeats_nothing_and_retry_after_is_honoured() {
    let mut backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "150ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until("the first batches", Duration::from_secs(30), || {
        seqs(&backend).len() >= 2
    })
    .await;

    // Down: connection refused while the agent keeps collecting.
    backend.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Back, but overloaded: three 503s, then a 429 asking for 2 s.
    backend.fail_next(3, 503, None);
    backend.restart().await.unwrap();
    wait_until("the 503s to be served", Duration::from_secs(60), || {
        backend.pending_faults(test_backend::Endpoint::Push) == 0
    })
    .await;
    backend.fail_next(1, 429, Some(Duration::from_secs(2)));
    wait_until("the 429 to be served", Duration::from_secs(60), || {
        backend.pending_faults(test_backend::Endpoint::Push) == 0
    })
    .await;
    let before = seqs(&backend).len();
    wait_until("delivery to resume", Duration::from_secs(60), || {
        seqs(&backend).len() > before + 3
    })
    .await;
    agent.stop().await;

    // Drain what is left with the plugin off, then compare with what the ticker committed.
    let committed = committed_seq(&setup.state(), "ticker");
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "150ms", "enabled = false"),
    );
    let agent = Agent::start(&config);
    wait_until("the spool to drain", Duration::from_secs(60), || {
        seqs(&backend).last() == Some(&committed)
    })
    .await;
    agent.stop().await;
    let seqs = seqs(&backend);
    assert_eq!(
        seqs,
        (1..=committed).collect::<Vec<_>>(),
        "every batch exactly once, in order"
    );
    // What waited during the outage went out several batches per push.
    let most_runs_in_a_push = backend
        .batches()
        .iter()
        .map(|push| {
            push.envelope["metrics"]
                .as_array()
                .map_or(0, |items| items.iter().filter(|i| i["index"] == 0).count())
        })
        .max()
        .unwrap_or(0);
    assert!(
        most_runs_in_a_push > 1,
        "the batches spooled during the outage were pushed one at a time"
    );

    // Retry-After: nothing was pushed within 2 s of the 429.
    let requests = backend.requests();
    let pushes: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/metrics/push")
        .collect();
    let throttled = pushes.iter().position(|r| r.status == 429).unwrap();
    let waited = pushes[throttled + 1]
        .at
        .duration_since(pushes[throttled].at)
        .unwrap();
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
    assert!(pushes.iter().filter(|r| r.status == 503).count() == 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_any_moment_loses_no_spooled_batch() {
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    // Pushes stay in flight a while, so kills land during pushes too.
    backend.set_push_delay(Some(Duration::from_millis(30)));
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker(
            "ticker",
            "20ms",
            "[plugins.ticker.settings]\nitems = 20\npad_bytes = 200\n",
        ),
    );
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12 {
        let agent = Agent::start(&config);
        if round == 0 {
            let state = setup.state();
            wait_until("the first runs", Duration::from_secs(30), || {
                committed_seq(&state, "ticker") >= 3
            })
            .await;
        }
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let after = Duration::from_millis(200 + rng_state % 1500);
        tokio::time::sleep(after).await;
        agent.signal(libc::SIGKILL);
        assert_eq!(
            agent.exit(Duration::from_secs(10)).await,
            None,
            "round {round}"
        );
    }
    let committed = committed_seq(&setup.state(), "ticker");
    assert!(committed > 20, "the ticker ran ({committed} runs)");
    backend.set_push_delay(None);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "20ms", "enabled = false"),
    );
    let agent = Agent::start(&config);
    wait_until("the spool to drain", Duration::from_secs(120), || {
        seqs(&backend).contains(&committed)
    })
    .await;
    agent.stop().await;
    let received = seqs(&backend);
    let distinct: BTreeSet<u64> = received.iter().copied().collect();
    let missing: Vec<u64> = (1..=committed).filter(|s| !distinct.contains(s)).collect();
    assert!(missing.is_empty(), "lost batches: {missing:?}");
    // Every batch is whole: 20 items per run, in every push (a push merges the batches
    // waiting, so it carries whole runs, never part of one).
    for push in backend.batches() {
        let mut per_run: std::collections::BTreeMap<u64, usize> = Default::default();
        for item in push.metrics() {
            *per_run.entry(item["seq"].as_u64().unwrap()).or_default() += 1;
        }
        assert!(
            per_run.values().all(|&items| items == 20),
            "a push with part of a run: {per_run:?}"
        );
    }
    println!(
        "{} runs committed, {} batches received, {} duplicates (2xx not recorded before a kill)",
        committed,
        received.len(),
        received.len() - distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_spool_drops_the_oldest_counts_it_and_keeps_running() {
    let mut backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    backend.stop().await;
    let port = free_loopback_port();
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "[buffer]\nmax_bytes = \"8KiB\"\n",
        &ticker(
            "ticker",
            "50ms",
            "[plugins.ticker.settings]\npad_bytes = 1000\n",
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[collector]\n",
        &format!("[collector]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config);
    wait_until(
        "dropped batches in /metrics",
        Duration::from_secs(30),
        || agent_metric(port, "pganalytics_batches_dropped_total").is_some_and(|n| n >= 5.0),
    )
    .await;
    let spooled = agent_metric(port, "pganalytics_spool_bytes").unwrap();
    assert!(spooled <= 8192.0, "spool bytes {spooled}");
    assert!(
        agent.log().contains("dropp"),
        "the drop is logged:\n{}",
        agent.log()
    );
    backend.restart().await.unwrap();
    wait_until("the newest batches", Duration::from_secs(30), || {
        !seqs(&backend).is_empty()
    })
    .await;
    agent.stop().await;
    let seqs = seqs(&backend);
    assert!(seqs[0] > 1, "the oldest were dropped: {seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the rest in order: {seqs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_batch_is_set_aside_and_later_ones_still_arrive() {
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    // Any push holding run 2: the agent merges the batches waiting into one push, so the
    // push carrying 2 is rejected whole, and its batches are then sent one by one.
    backend.reject_batches_where(|envelope| {
        envelope["metrics"]
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item["seq"] == 2))
    });
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "100ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until(
        "batches after the rejected one",
        Duration::from_secs(30),
        || seqs(&backend).contains(&5),
    )
    .await;
    agent.stop().await;
    let received = seqs(&backend);
    assert!(!received.contains(&2));
    assert_eq!(&received[..4], &[1, 3, 4, 5]);
    let dead = setup.state().join("spool/dead-letter");
    let mut files: Vec<_> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let batch = std::fs::read_to_string(&files[0]).unwrap();
    assert!(batch.contains("\"seq\":2"), "{batch}");
    let reason = std::fs::read_to_string(&files[1]).unwrap();
    assert!(reason.contains("400"), "{reason}");
    let batch: serde_json::Value = serde_json::from_str(&batch).unwrap();
    let runs: Vec<_> = batch["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["seq"].clone())
        .collect();
    assert!(
        runs.iter().all(|seq| *seq == 2),
        "only run 2 is set aside: {runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_token_leads_to_registering_again_without_losing_batches() {
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.registration(),
        "",
        &ticker("ticker", "100ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until("first batches", Duration::from_secs(30), || {
        seqs(&backend).len() >= 2
    })
    .await;
    // Every token issued so far is now refused (401), refresh included.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backend.revoke_tokens_issued_before(SystemTime::now());
    let before = seqs(&backend).len();
    wait_until(
        "batches after re-registering",
        Duration::from_secs(30),
        || seqs(&backend).len() > before + 3,
    )
    .await;
    agent.stop().await;
    assert_eq!(
        backend.registrations().len(),
        2,
        "registered again after the 401"
    );
    let seqs = seqs(&backend);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let dead_letters =
        std::fs::read_dir(setup.state().join("spool/dead-letter")).map_or(0, |d| d.count());
    assert_eq!(dead_letters, 0, "a 401 never dead-letters a batch");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_problems_are_named_data_is_kept_and_sighup_applies_the_fix() {
    // A backend whose CA the agent does not have.
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let other = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    std::fs::write(setup.path("ca.pem"), other.ca_pem()).unwrap();
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "100ms", ""),
    );
    let agent = Agent::start(&config);
    agent
        .wait_for_log(&["invalid peer certificate"], Duration::from_secs(30))
        .await;
    assert!(seqs(&backend).is_empty());
    // The fix, applied with SIGHUP: everything collected meanwhile arrives.
    std::fs::write(setup.path("ca.pem"), backend.ca_pem()).unwrap();
    let state = setup.state();
    wait_until(
        "collection to go on meanwhile",
        Duration::from_secs(30),
        || committed_seq(&state, "ticker") >= 3,
    )
    .await;
    let committed_before = committed_seq(&state, "ticker");
    // An invalid file first: rejected, the agent keeps going.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[tls]", "[tls]\nbogus_key = 1")).unwrap();
    agent.signal(libc::SIGHUP);
    agent
        .wait_for_log(&["bogus_key"], Duration::from_secs(10))
        .await;
    std::fs::write(&config, good).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until("the backlog", Duration::from_secs(30), || {
        seqs(&backend).contains(&(committed_before + 1))
    })
    .await;
    agent.stop().await;
    let received = seqs(&backend);
    assert_eq!(received[0], 1);
    assert!(
        received.windows(2).all(|w| w[1] == w[0] + 1),
        "{received:?}"
    );

    // A TLS 1.2-only backend against the default TLS 1.3 minimum.
    let old = TestBackend::start(BackendConfig {
        tls12_only: true,
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&old);
    let config = setup.config(
        &old.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "100ms", ""),
    );
    let agent = Agent::start(&config);
    agent
        .wait_for_log(
            &["ProtocolVersion", "protocol version"],
            Duration::from_secs(30),
        )
        .await;
    let state = setup.state();
    wait_until(
        "collection to go on meanwhile",
        Duration::from_secs(30),
        || committed_seq(&state, "ticker") >= 2,
    )
    .await;
    agent.stop().await;
    assert!(seqs(&old).is_empty());
    assert!(agent_log_mentions_the_fix(&setup));
}

/// The TLS 1.2 failure names the setting that would allow it.
fn agent_log_mentions_the_fix(setup: &Setup) -> bool {
    std::fs::read_dir(setup.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("agent-"))
        .any(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .contains("tls.min_version = \"1.2\"")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pulled_config_changes_intervals_and_disables_plugins_live_and_bad_ones_are_refused() {
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let plugins = format!(
        "{}{}",
        ticker("ticker", "1h", ""),
        ticker("other", "100ms", "")
    );
    let config = setup.config(&backend.url(), &setup.shared_secret(), "", &plugins);
    let agent = Agent::start(&config);
    wait_until("`other` to run", Duration::from_secs(30), || {
        committed_seq(&setup.state(), "other") >= 2
    })
    .await;
    let local = std::fs::read_to_string(&config).unwrap();
    // Version 2: `ticker` every 1s (the floor of a pulled interval), `other` off.
    let v2 = local
        .replacen("interval = \"1h\"", "interval = \"1s\"", 1)
        .replace("[plugins.other]\n", "[plugins.other]\nenabled = false\n");
    backend.set_config(2, &v2);
    wait_until("`ticker` to run every 1s", Duration::from_secs(30), || {
        committed_seq(&setup.state(), "ticker") >= 3
    })
    .await;
    let other_stopped_at = committed_seq(&setup.state(), "other");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(committed_seq(&setup.state(), "other"), other_stopped_at);

    // Version 3 widens a grant: refused, version 2 keeps running.
    let v3 = format!("{v2}\n[plugins.ticker.grants.procfs]\npaths = [\"*\"]\n");
    backend.set_config(3, &v3);
    agent
        .wait_for_log(
            &["backend config version 3 rejected"],
            Duration::from_secs(30),
        )
        .await;
    assert!(
        agent.log().contains("plugins.ticker.grants"),
        "{}",
        agent.log()
    );
    // Version 4 is not TOML at all.
    backend.set_config(4, "this is [not toml");
    agent
        .wait_for_log(
            &["backend config version 4 rejected"],
            Duration::from_secs(30),
        )
        .await;
    let ticks = committed_seq(&setup.state(), "ticker");
    wait_until("still running version 2", Duration::from_secs(15), || {
        committed_seq(&setup.state(), "ticker") > ticks
    })
    .await;
    // Version 5 lowers `ticker` under the 1 s floor: refused, naming the key.
    backend.set_config(
        5,
        &v2.replacen("interval = \"1s\"", "interval = \"100ms\"", 1),
    );
    agent
        .wait_for_log(
            &["backend config version 5 rejected"],
            Duration::from_secs(30),
        )
        .await;
    assert!(
        agent.log().contains("`plugins.ticker.interval"),
        "{}",
        agent.log()
    );
    agent.stop().await;

    // A restart keeps version 2.
    let agent = Agent::start(&config);
    let ticks = committed_seq(&setup.state(), "ticker");
    wait_until("version 2 after a restart", Duration::from_secs(30), || {
        committed_seq(&setup.state(), "ticker") > ticks + 2
    })
    .await;
    agent.stop().await;
    assert_eq!(committed_seq(&setup.state(), "other"), other_stopped_at);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_plugin_file_is_verified_and_a_bad_one_leaves_the_old_running() {
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let file = setup.path("ticker.wasm");
    std::fs::copy(wasm("ticker"), &file).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()))
    };
    let plugins = format!(
        "[plugins.ticker]\nwasm = {:?}\nsha256 = {digest:?}\nemits = [\"tick\"]\ninterval = \"100ms\"\n",
        file.display().to_string()
    );
    let config = setup.config(&backend.url(), &setup.shared_secret(), "", &plugins);
    let agent = Agent::start(&config);
    wait_until("ticks", Duration::from_secs(30), || {
        seqs(&backend).len() >= 2
    })
    .await;
    // Another component renamed over it, as a deployment would.
    std::fs::copy(wasm("sysstat"), setup.path("new.wasm")).unwrap();
    std::fs::rename(setup.path("new.wasm"), &file).unwrap();
    agent
        .wait_for_log(
            &["the previous version keeps running"],
            Duration::from_secs(30),
        )
        .await;
    assert!(agent.log().contains("sha256"), "{}", agent.log());
    let before = seqs(&backend).len();
    wait_until(
        "ticks from the old version",
        Duration::from_secs(30),
        || seqs(&backend).len() > before + 2,
    )
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_plugin_file_with_a_bad_signature_is_refused_and_the_old_keeps_running() {
    use pganalytics::plugin::signature::{SecretKey, SignatureFile, signature_path};
    let backend = TestBackend::start(BackendConfig {
        ..BackendConfig::default()
    })
    .await;
    let setup = Setup::new(&backend);
    let key = SecretKey::generate("release").unwrap();
    std::fs::write(setup.path("release.pub"), key.public().to_file_text()).unwrap();
    let file = setup.path("ticker.wasm");
    std::fs::copy(wasm("ticker"), &file).unwrap();
    let sign = |path: &Path| {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(std::fs::read(path).unwrap()).into();
        let mut signatures = SignatureFile::default();
        signatures.add(key.sign(&digest));
        std::fs::write(signature_path(path), signatures.to_file_text()).unwrap();
    };
    sign(&file);
    let plugins = format!(
        "[trust.keys]\nrelease = {:?}\n\n[plugins.ticker]\nwasm = {:?}\nsigned_by = [\"release\"]\nemits = [\"tick\"]\ninterval = \"100ms\"\n",
        setup.path("release.pub").display().to_string(),
        file.display().to_string()
    );
    let config = setup.config(&backend.url(), &setup.shared_secret(), "", &plugins);
    let agent = Agent::start(&config);
    wait_until("ticks", Duration::from_secs(30), || {
        seqs(&backend).len() >= 2
    })
    .await;
    // Another component renamed over it, its .sig left as it was: the signature no longer
    // matches the file.
    std::fs::copy(wasm("sysstat"), setup.path("new.wasm")).unwrap();
    std::fs::rename(setup.path("new.wasm"), &file).unwrap();
    agent
        .wait_for_log(
            &["the previous version keeps running"],
            Duration::from_secs(30),
        )
        .await;
    assert!(
        agent
            .log()
            .contains("the signature by `release` does not match the file"),
        "{}",
        agent.log()
    );
    let before = seqs(&backend).len();
    wait_until(
        "ticks from the old version",
        Duration::from_secs(30),
        || seqs(&backend).len() > before + 2,
    )
    .await;
    agent.stop().await;
}

/// Push requests the backend saw with a gzip body.
fn gzip_pushes(backend: &TestBackend) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/api/v1/metrics/push" && r.header("content-encoding") == Some("gzip")
        })
        .count()
}

fn dead_letters(setup: &Setup) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(setup.state().join("spool/dead-letter"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_compression_falls_back_to_plain_json_once_and_remembers_it_across_restarts() {
    // Like the real backend: a gzip body is decoded as JSON as it is, and answers 400.
    let backend = TestBackend::start(BackendConfig::default()).await;
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "150ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until("batches", Duration::from_secs(30), || {
        seqs(&backend).contains(&6)
    })
    .await;
    agent
        .wait_for_log(&["accepted it uncompressed"], Duration::from_secs(5))
        .await;
    agent.stop().await;
    assert_eq!(gzip_pushes(&backend), 1, "one probe, then plain JSON");
    assert!(backend.batches().iter().all(|b| !b.gzipped));
    let received = seqs(&backend);
    assert!(
        received.windows(2).all(|w| w[1] == w[0] + 1) && received[0] == 1,
        "nothing lost: {received:?}"
    );
    assert_eq!(dead_letters(&setup), Vec::<PathBuf>::new());
    assert!(setup.state().join("backend/encoding.json").exists());

    // A restart remembers: no gzip probe at all.
    backend.clear_records();
    let agent = Agent::start(&config);
    wait_until("batches after the restart", Duration::from_secs(30), || {
        backend.batches().len() >= 3
    })
    .await;
    agent.stop().await;
    assert_eq!(gzip_pushes(&backend), 0);
    assert_eq!(dead_letters(&setup), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_compression_never_falls_back_and_none_never_compresses() {
    let backend = TestBackend::start(BackendConfig::default()).await;

    // `gzip`: a backend that does not decode it dead-letters the batch, with a reason that
    // says what to change.
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &format!("{}\ncompression = \"gzip\"", setup.shared_secret()),
        "",
        &ticker("ticker", "200ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until(
        "two dead letters (batch and reason each)",
        Duration::from_secs(30),
        || dead_letters(&setup).len() >= 4,
    )
    .await;
    agent.stop().await;
    assert!(backend.batches().is_empty(), "nothing was accepted");
    assert!(
        backend
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v1/metrics/push")
            .all(|r| r.header("content-encoding") == Some("gzip") && r.status == 400)
    );
    let reason = dead_letters(&setup)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".reason.txt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap();
    assert!(
        reason.contains("400") && reason.contains("never falls back"),
        "{reason}"
    );
    assert!(!setup.state().join("backend/encoding.json").exists());

    // `none`: plain bodies from the first batch, without a Content-Encoding header.
    backend.clear_records();
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &format!("{}\ncompression = \"none\"", setup.shared_secret()),
        "",
        &ticker("ticker", "200ms", ""),
    );
    let agent = Agent::start(&config);
    wait_until("batches", Duration::from_secs(30), || {
        backend.batches().len() >= 3
    })
    .await;
    agent.stop().await;
    assert!(
        backend
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v1/metrics/push")
            .all(|r| r.header("content-encoding").is_none() && r.status == 200)
    );
    assert_eq!(dead_letters(&setup), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_backend_is_refused_at_start_and_allowed_only_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = format!(
        "[collector]\nid = \"c\"\nstate_dir = {:?}\n\n[backend]\nurl = \"http://127.0.0.1:1\"\n",
        dir.path().join("state").display().to_string()
    );
    std::fs::write(&config, &text).unwrap();
    let output = Command::new(binary())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("config.toml:6: `backend.url`") && stderr.contains("allow_insecure_http"),
        "{stderr}"
    );

    std::fs::write(
        &config,
        text.replace("url =", "allow_insecure_http = true\nurl ="),
    )
    .unwrap();
    let agent = Agent::start(&config);
    agent
        .wait_for_log(&["cross the network in clear"], Duration::from_secs(30))
        .await;
    agent.stop().await;
}

fn check_command(config: &Path) -> (bool, String) {
    let output = Command::new(binary())
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn check_tries_postgres_and_the_backend_and_names_what_fails() {
    let cluster = throwaway_pg::TestCluster::start(&[]);
    let backend = TestBackend::start(BackendConfig::default()).await;
    let setup = Setup::new(&backend);
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        &cluster.postgres_section(),
        "",
    );
    let (success, text) = check_command(&config);
    assert!(success, "{text}");
    for line in [
        "ok   config ",
        "ok   postgres ",
        "ok   backend https://localhost:",
        "TLS handshake ok",
        "collector `agent-under-test` has a token",
        "token accepted: GET /api/v1/config/agent-under-test answered",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(
        text.contains("PostgreSQL 1") && text.contains("pg_stat_statements"),
        "{text}"
    );
    assert!(backend.batches().is_empty(), "check never pushes");

    // A wrong PostgreSQL port, a wrong backend port and a wrong token secret, each named.
    let closed = free_loopback_port();
    let text_of = |from: &str, to: &str| {
        let body = std::fs::read_to_string(&config).unwrap().replace(from, to);
        std::fs::write(&config, body).unwrap();
        check_command(&config)
    };
    let port_line = format!(
        "port = {}\n",
        cluster
            .postgres_section()
            .split("port = ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
    );
    let (success, text) = text_of(&port_line, &format!("port = {closed}\n"));
    assert!(!success);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL postgres ")
            && l.contains(&format!(":{closed} "))
            && l.contains("cannot connect")),
        "{text}"
    );
    assert!(
        text.contains("ok   backend"),
        "the backend is still checked: {text}"
    );

    let (success, text) = text_of(&backend.url(), &format!("https://localhost:{closed}"));
    assert!(!success);
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "FAIL backend https://localhost:{closed} connection"
        ))),
        "{text}"
    );

    let text_before = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text_before.replace(&format!("https://localhost:{closed}"), &backend.url()),
    )
    .unwrap();
    std::fs::write(
        setup.path("jwt_secret"),
        b"not-the-backends-secret-0123456789abcdef",
    )
    .unwrap();
    let (success, text) = check_command(&config);
    assert!(!success);
    assert!(
        text.lines().any(|l| l.starts_with("FAIL backend")
            && l.contains("token accepted")
            && l.contains("401")),
        "{text}"
    );
}

/// Status line and body of a GET on the agent's listener.
fn agent_status(port: u16, path: &str) -> Option<(String, String)> {
    let response = agent_get(port, path)?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_turns_503_when_pushes_fail_for_n_intervals_and_200_after_a_push() {
    let mut backend = TestBackend::start(BackendConfig::default()).await;
    let setup = Setup::new(&backend);
    let port = free_loopback_port();
    let config = setup.config(
        &backend.url(),
        &setup.shared_secret(),
        "",
        &ticker("ticker", "200ms", ""),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[collector]\n",
        &format!(
            "[collector]\nlisten = \"127.0.0.1:{port}\"\nunhealthy_after_push_intervals = 3\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&config);
    wait_until("batches", Duration::from_secs(30), || {
        backend.batches().len() >= 2
    })
    .await;
    wait_until("healthy", Duration::from_secs(10), || {
        agent_status(port, "/healthz").is_some_and(|(status, _)| status.contains(" 200 "))
    })
    .await;

    // The exposition parses: every sample has a declared family, the text ends with # EOF.
    let (status, exposition) = agent_status(port, "/metrics").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert!(exposition.ends_with("# EOF\n"), "{exposition}");
    let mut families = Vec::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') {
            let (name, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
            assert!(
                families.iter().any(|f| name.starts_with(f.as_str())),
                "{line}"
            );
        }
    }
    for series in [
        "pganalytics_build_info{version=",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
        "process_cpu_seconds_total ",
        "pganalytics_plugin_run_duration_seconds_count{plugin=\"ticker\"} ",
        "pganalytics_plugin_last_success_timestamp_seconds{plugin=\"ticker\"} ",
        "pganalytics_spool_lost_batches_total 0",
        "pganalytics_spool_cursor_losses_total 0",
        "pganalytics_dead_letters_removed_total 0",
        "pganalytics_batches_dropped_disk_full_total 0",
        "pganalytics_push_compression_fallbacks_total{result=\"accepted\"} 1",
    ] {
        assert!(
            exposition.lines().any(|l| l.starts_with(series)),
            "no {series:?} in:\n{exposition}"
        );
    }

    // The backend goes away: after 3 push intervals without a successful push, 503 and why.
    backend.stop().await;
    wait_until("unhealthy", Duration::from_secs(30), || {
        agent_status(port, "/healthz").is_some_and(|(status, body)| {
            status.contains(" 503 ") && body.contains("no push succeeded")
        })
    })
    .await;
    backend.restart().await.unwrap();
    wait_until(
        "healthy again after a push",
        Duration::from_secs(90),
        || agent_status(port, "/healthz").is_some_and(|(status, _)| status.contains(" 200 ")),
    )
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_listener_needs_listen_public() {
    let backend = TestBackend::start(BackendConfig::default()).await;
    let setup = Setup::new(&backend);
    let port = free_loopback_port();
    let config = setup.config(&backend.url(), &setup.shared_secret(), "", "");
    let base = std::fs::read_to_string(&config).unwrap();
    for address in [
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("192.0.2.1:{port}"),
    ] {
        std::fs::write(
            &config,
            base.replace(
                "[collector]\n",
                &format!("[collector]\nlisten = \"{address}\"\n"),
            ),
        )
        .unwrap();
        let output = Command::new(binary())
            .args(["run", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{address}");
        assert!(
            stderr.contains("config.toml:2: `collector.listen`")
                && stderr.contains("listen_public"),
            "{address}: {stderr}"
        );
    }
    std::fs::write(
        &config,
        base.replace(
            "[collector]\n",
            &format!("[collector]\nlisten = \"0.0.0.0:{port}\"\nlisten_public = true\n"),
        ),
    )
    .unwrap();
    let agent = Agent::start(&config);
    wait_until("the public listener", Duration::from_secs(30), || {
        agent_status(port, "/healthz").is_some_and(|(status, _)| status.contains(" 200 "))
    })
    .await;
    assert!(agent.log().contains("listen_public = true"));
    agent.stop().await;
}
