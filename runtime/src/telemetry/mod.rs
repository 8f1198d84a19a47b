//! The agent's own health: Prometheus metrics (OpenMetrics text, encoded by the
//! `prometheus-client` crate) and `/healthz`, served on an optional listener
//! (`[collector] listen`).
//!
//! The listener is hand-rolled on purpose: two fixed GET routes do not justify an HTTP
//! framework. It binds a non-loopback address only when the config says
//! `listen_public = true` (checked in config, and again here).

mod health;
mod process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use health::Health;

/// Label pairs of one series (values escaped for the text format, see [`labels`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(String, String)>);

/// What `inc`/`add` accept as labels: `""` for none, or `&labels(...)`.
pub trait LabelArg {
    fn to_labels(&self) -> Labels;
}

impl LabelArg for &str {
    fn to_labels(&self) -> Labels {
        debug_assert!(self.is_empty(), "labels are built with `labels()`");
        Labels::default()
    }
}

impl LabelArg for &Labels {
    fn to_labels(&self) -> Labels {
        (*self).clone()
    }
}

type LabelPairs = Vec<(String, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;
type F64Counter = Counter<f64, AtomicU64>;
type HistogramFamily = Family<LabelPairs, Histogram, fn() -> Histogram>;

/// A counter with labels (a family, empty until first used) or without (exported as 0 from
/// the start, and without an empty `{}`).
enum CounterKind {
    Labeled(Family<LabelPairs, Counter>),
    Plain(Counter),
}

/// Counters, in output order: name (as exported, with `_total`) and help. A help containing
/// ", by" has labels; the others are exported as 0 before their first increment.
const COUNTERS: &[(&str, &str)] = &[
    (
        "pganalytics_collections_total",
        "Plugin runs whose output was accepted, by plugin.",
    ),
    (
        "pganalytics_collection_failures_total",
        "Plugin runs that failed, by plugin and reason.",
    ),
    (
        "pganalytics_limit_hits_total",
        "Runs stopped by a sandbox limit, by plugin and limit.",
    ),
    (
        "pganalytics_denied_host_calls_total",
        "Host calls denied to plugins, by plugin.",
    ),
    (
        "pganalytics_plugin_load_failures_total",
        "Plugins refused at load, by plugin.",
    ),
    (
        "pganalytics_batches_spooled_total",
        "Batches written to the spool.",
    ),
    (
        "pganalytics_batches_sent_total",
        "Batches the backend accepted.",
    ),
    (
        "pganalytics_batches_dead_lettered_total",
        "Batches the backend rejected (400), kept aside.",
    ),
    (
        "pganalytics_batches_dropped_total",
        "Batches dropped because the spool was full (size bound or full disk).",
    ),
    (
        "pganalytics_batches_dropped_disk_full_total",
        "Of the dropped batches, those dropped because the file system was full.",
    ),
    (
        "pganalytics_spool_lost_batches_total",
        "Spooled batches that could no longer be read (corruption), set aside as lost.",
    ),
    (
        "pganalytics_dead_letters_removed_total",
        "Dead letters removed by the dead-letter bounds or a full disk.",
    ),
    (
        "pganalytics_spool_cursor_losses_total",
        "Times the spool's cursor was missing or unreadable at open (acked batches may be sent again).",
    ),
    (
        "pganalytics_push_retries_total",
        "Push attempts that will be retried, by cause.",
    ),
    (
        "pganalytics_push_compression_fallbacks_total",
        "Gzip bodies the backend refused that were resent uncompressed (compression = auto), by result.",
    ),
    (
        "pganalytics_config_reloads_total",
        "Configuration reloads, by source and result.",
    ),
];

/// Gauges: name and help.
const GAUGES: &[(&str, &str)] = &[
    (
        "pganalytics_spool_bytes",
        "Bytes of batches waiting in the spool.",
    ),
    ("pganalytics_spool_batches", "Batches waiting in the spool."),
];

/// Buckets of the push latency, seconds: 5 ms to about 40 s.
fn push_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Buckets of a plugin run, seconds: 1 ms to about 16 s.
fn run_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the agent exports, and its health.
pub struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, CounterKind>,
    gauges: HashMap<&'static str, F64Gauge>,
    push_latency: Histogram,
    run_duration: HistogramFamily,
    last_success: Family<LabelPairs, F64Gauge>,
    process_cpu: F64Counter,
    process_resident: F64Gauge,
    process_virtual: F64Gauge,
    process_fds: F64Gauge,
    process_max_fds: F64Gauge,
    process_start: F64Gauge,
    /// In use and freed-but-kept bytes of the C heap, where the C library reports them.
    heap: Option<(F64Gauge, F64Gauge)>,
    pub health: Health,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        for (name, help) in COUNTERS {
            // The text encoder appends `_total` to counters itself.
            let base = name.strip_suffix("_total").unwrap_or(name);
            let kind = if help.contains(", by") {
                let family = Family::<LabelPairs, Counter>::default();
                registry.register(base, *help, family.clone());
                CounterKind::Labeled(family)
            } else {
                let counter = Counter::default();
                registry.register(base, *help, counter.clone());
                CounterKind::Plain(counter)
            };
            counters.insert(*name, kind);
        }
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let gauge = F64Gauge::default();
            registry.register(*name, *help, gauge.clone());
            gauges.insert(*name, gauge);
        }
        let push_latency = push_buckets();
        registry.register(
            "pganalytics_push_latency_seconds",
            "Time to push one batch (one HTTP request).",
            push_latency.clone(),
        );
        let run_duration = HistogramFamily::new_with_constructor(run_buckets);
        registry.register(
            "pganalytics_plugin_run_duration_seconds",
            "Wall-clock time of accepted plugin runs (sandbox and host calls), by plugin.",
            run_duration.clone(),
        );
        let last_success = Family::<LabelPairs, F64Gauge>::default();
        registry.register(
            "pganalytics_plugin_last_success_timestamp_seconds",
            "Unix time of the last accepted run, by plugin.",
            last_success.clone(),
        );
        let build = Family::<LabelPairs, Gauge>::default();
        build
            .get_or_create(
                &labels(&[
                    ("version", crate::VERSION),
                    ("wasmtime", "48.0.8"),
                    ("target", std::env::consts::ARCH),
                ])
                .0,
            )
            .set(1);
        registry.register(
            "pganalytics_build_info",
            "Always 1; the labels say which build this is.",
            build,
        );
        let process = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = F64Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let process_cpu = F64Counter::default();
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            process_cpu.clone(),
        );
        Self {
            process_resident: process(
                &mut registry,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            process_virtual: process(
                &mut registry,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            process_fds: process(
                &mut registry,
                "process_open_fds",
                "Number of open file descriptors.",
            ),
            process_max_fds: process(
                &mut registry,
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            process_start: process(
                &mut registry,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            ),
            heap: crate::heap::REPORTED.then(|| {
                (
                    process(
                        &mut registry,
                        "pganalytics_heap_in_use_bytes",
                        "Bytes of the C heap allocated and not yet freed (glibc's mallinfo2).",
                    ),
                    process(
                        &mut registry,
                        "pganalytics_heap_free_bytes",
                        "Bytes of the C heap freed and kept by the allocator for reuse; the \
                         agent returns their pages to the system every 5 s (glibc's mallinfo2).",
                    ),
                )
            }),
            process_cpu,
            registry,
            counters,
            gauges,
            push_latency,
            run_duration,
            last_success,
            health: Health::default(),
        }
    }
}

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: impl LabelArg) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: impl LabelArg, value: u64) {
        match self.counters.get(name) {
            Some(CounterKind::Labeled(family)) => {
                family.get_or_create(&labels.to_labels().0).inc_by(value);
            }
            Some(CounterKind::Plain(counter)) => {
                counter.inc_by(value);
            }
            None => debug_assert!(false, "unknown counter `{name}`"),
        }
    }

    /// Sets an unlabeled counter to a total kept elsewhere (the spool's, which survive
    /// restarts). A total never goes down; a smaller value is ignored.
    pub fn set_total(&self, name: &'static str, value: u64) {
        if let Some(CounterKind::Plain(counter)) = self.counters.get(name) {
            let now = counter.get();
            if value > now {
                counter.inc_by(value - now);
            }
        }
    }

    pub fn set(&self, name: &'static str, value: f64) {
        match self.gauges.get(name) {
            Some(gauge) => {
                gauge.set(value);
            }
            None => debug_assert!(false, "unknown gauge `{name}`"),
        }
    }

    pub fn observe_push(&self, latency: Duration) {
        self.push_latency.observe(latency.as_secs_f64());
    }

    /// An accepted run of `plugin` that took `elapsed`.
    pub fn observe_run(&self, plugin: &str, elapsed: Duration) {
        let labels = labels(&[("plugin", plugin)]).0;
        self.run_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_success.get_or_create(&labels).set(now);
    }

    /// The value of one counter, for tests and logs.
    pub fn counter(&self, name: &str, labels: impl LabelArg) -> u64 {
        match self.counters.get(name) {
            Some(CounterKind::Labeled(family)) => family
                .get(&labels.to_labels().0)
                .map_or(0, |counter| counter.get()),
            Some(CounterKind::Plain(counter)) => counter.get(),
            None => 0,
        }
    }

    /// The OpenMetrics text exposition. Reads `/proc/self` for the `process_*` metrics: call
    /// it from a blocking thread.
    pub fn render(&self) -> String {
        let sample = process::sample();
        let cpu = self.process_cpu.get();
        if sample.cpu_seconds > cpu {
            self.process_cpu.inc_by(sample.cpu_seconds - cpu);
        }
        self.process_resident.set(sample.resident_bytes);
        self.process_virtual.set(sample.virtual_bytes);
        self.process_fds.set(sample.open_fds);
        self.process_max_fds.set(sample.max_fds);
        self.process_start.set(sample.start_time_seconds);
        if let (Some((in_use, free)), Some(heap)) = (&self.heap, sample.heap) {
            in_use.set(heap.in_use_bytes);
            free.set(heap.free_bytes);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }
}

/// Label pairs, values escaped for the text format (the encoder writes them as they are).
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels(
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n"),
                )
            })
            .collect(),
    )
}

/// Serves `/healthz` and `/metrics` on `addr` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    public: bool,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<()> {
    if !addr.ip().is_loopback() && !public {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "`collector.listen` {addr} is not a loopback address and `collector.listen_public` is not set"
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Some(request) = read_head(&mut stream).await else {
                return;
            };
            let line = String::from_utf8_lossy(&request);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, content_type, body) = match path {
                "/healthz" => match metrics.health.check() {
                    Ok(()) => ("200 OK", "text/plain", "ok\n".to_owned()),
                    Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
                },
                "/metrics" => {
                    let metrics = metrics.clone();
                    let body = tokio::task::spawn_blocking(move || metrics.render())
                        .await
                        .unwrap_or_default();
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body,
                    )
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// Reads a request up to the end of its headers (at most 8 KiB, within 5 s): answering after a
/// partial read would reset the connection under the client's remaining bytes.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 || head.len() > 8192 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series of an exposition: name with labels → value; checks the text is well-formed
    /// (every sample belongs to a declared family, the text ends with `# EOF`).
    fn parse(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with("# EOF\n"), "{text}");
        let mut families = Vec::new();
        let mut series = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                families.push(rest.split(' ').next().unwrap().to_owned());
            } else if line.starts_with('#') {
                continue;
            } else {
                let (name, value) = line.rsplit_once(' ').unwrap();
                let base = name.split('{').next().unwrap();
                assert!(
                    families.iter().any(|f| base.starts_with(f.as_str())),
                    "{base} has no # TYPE"
                );
                series.insert(name.to_owned(), value.parse::<f64>().unwrap());
            }
        }
        series
    }

    #[test]
    fn the_exposition_has_every_family_labels_process_and_build_info() {
        let metrics = Metrics::default();
        metrics.inc(
            "pganalytics_collection_failures_total",
            &labels(&[("plugin", "x"), ("reason", "deadline")]),
        );
        metrics.inc("pganalytics_batches_sent_total", "");
        metrics.set("pganalytics_spool_bytes", 42.0);
        metrics.set_total("pganalytics_spool_lost_batches_total", 3);
        metrics.set_total("pganalytics_spool_lost_batches_total", 2);
        metrics.observe_push(Duration::from_millis(20));
        metrics.observe_run("x", Duration::from_millis(3));
        let series = parse(&metrics.render());
        let get = |name: &str| {
            *series
                .get(name)
                .unwrap_or_else(|| panic!("no {name} in {series:?}"))
        };
        assert_eq!(
            get("pganalytics_collection_failures_total{plugin=\"x\",reason=\"deadline\"}"),
            1.0
        );
        assert_eq!(get("pganalytics_batches_sent_total"), 1.0);
        assert_eq!(get("pganalytics_batches_dropped_total"), 0.0);
        assert_eq!(
            get("pganalytics_spool_lost_batches_total"),
            3.0,
            "a total never goes down"
        );
        for name in [
            "pganalytics_batches_dropped_disk_full_total",
            "pganalytics_dead_letters_removed_total",
            "pganalytics_spool_cursor_losses_total",
        ] {
            assert_eq!(get(name), 0.0);
        }
        assert_eq!(get("pganalytics_spool_bytes"), 42.0);
        assert_eq!(get("pganalytics_push_latency_seconds_count"), 1.0);
        assert_eq!(
            get("pganalytics_plugin_run_duration_seconds_count{plugin=\"x\"}"),
            1.0
        );
        assert!(get("pganalytics_plugin_last_success_timestamp_seconds{plugin=\"x\"}") > 1.5e9);
        let build = format!(
            "pganalytics_build_info{{version=\"{}\",wasmtime=\"48.0.8\",target=\"{}\"}}",
            crate::VERSION,
            std::env::consts::ARCH
        );
        assert_eq!(get(&build), 1.0);
        assert!(get("process_cpu_seconds_total") >= 0.0);
        assert!(get("process_resident_memory_bytes") > 1e6);
        assert!(get("process_open_fds") >= 3.0);
        assert!(get("process_start_time_seconds") > 1.5e9);
        if crate::heap::REPORTED {
            assert!(get("pganalytics_heap_in_use_bytes") > 0.0);
            assert!(get("pganalytics_heap_free_bytes") >= 0.0);
        }
        assert_eq!(metrics.counter("pganalytics_batches_sent_total", ""), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.inc(
            "pganalytics_plugin_load_failures_total",
            &labels(&[("plugin", "q\"x\\\n")]),
        );
        let text = metrics.render();
        assert!(
            text.contains("pganalytics_plugin_load_failures_total{plugin=\"q\\\"x\\\\\\n\"} 1"),
            "{text}"
        );
    }
}
