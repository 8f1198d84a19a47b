//! The agent's own health: counters and gauges in Prometheus text format, served with
//! `/healthz` on an optional localhost listener (`[collector] listen`).
//!
//! Hand-rolled on purpose: two fixed GET routes do not justify an HTTP framework, and the
//! listener refuses anything that is not a loopback address.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every metric the agent exports. Labeled counters keep their labels sorted for stable output.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    gauges: Mutex<BTreeMap<&'static str, f64>>,
    push_latency_sum_us: AtomicU64,
    push_latency_count: AtomicU64,
}

/// Help text of each metric, in output order.
const HELP: &[(&str, &str, &str)] = &[
    (
        "pganalytics_collections_total",
        "counter",
        "Plugin runs whose output was accepted.",
    ),
    (
        "pganalytics_collection_failures_total",
        "counter",
        "Plugin runs that failed, by plugin and reason.",
    ),
    (
        "pganalytics_limit_hits_total",
        "counter",
        "Runs stopped by a sandbox limit, by plugin and limit.",
    ),
    (
        "pganalytics_denied_host_calls_total",
        "counter",
        "Host calls denied to plugins, by plugin.",
    ),
    (
        "pganalytics_plugin_load_failures_total",
        "counter",
        "Plugins refused at load, by plugin.",
    ),
    (
        "pganalytics_batches_spooled_total",
        "counter",
        "Batches written to the spool.",
    ),
    (
        "pganalytics_batches_sent_total",
        "counter",
        "Batches the backend accepted.",
    ),
    (
        "pganalytics_batches_dead_lettered_total",
        "counter",
        "Batches the backend rejected (400), kept aside.",
    ),
    (
        "pganalytics_batches_dropped_total",
        "counter",
        "Batches dropped because the spool was full.",
    ),
    (
        "pganalytics_push_retries_total",
        "counter",
        "Push attempts that will be retried, by cause.",
    ),
    (
        "pganalytics_config_reloads_total",
        "counter",
        "Configuration reloads, by source and result.",
    ),
    (
        "pganalytics_spool_bytes",
        "gauge",
        "Bytes of batches waiting in the spool.",
    ),
    (
        "pganalytics_spool_batches",
        "gauge",
        "Batches waiting in the spool.",
    ),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: &str) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &str, value: u64) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((name, labels.to_owned()))
            .or_default() += value;
    }

    /// Sets an unlabeled counter to a total kept elsewhere (the spool's, which survive restarts).
    pub fn set_total(&self, name: &'static str, value: u64) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name, String::new()), value);
    }

    pub fn set(&self, name: &'static str, value: f64) {
        self.gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, value);
    }

    pub fn observe_push(&self, latency: std::time::Duration) {
        self.push_latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.push_latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of one counter, for tests and logs.
    pub fn counter(&self, name: &str, labels: &str) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|((n, l), _)| *n == name && l == labels)
            .map_or(0, |(_, v)| *v)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if *kind == "gauge" {
                let _ = writeln!(out, "{name} {}", gauges.get(name).copied().unwrap_or(0.0));
                continue;
            }
            let mut any = false;
            for ((n, labels), value) in &counters {
                if n == name {
                    any = true;
                    if labels.is_empty() {
                        let _ = writeln!(out, "{name} {value}");
                    } else {
                        let _ = writeln!(out, "{name}{{{labels}}} {value}");
                    }
                }
            }
            if !any && !help.contains(", by") {
                let _ = writeln!(out, "{name} 0");
            }
        }
        let count = self.push_latency_count.load(Ordering::Relaxed);
        let sum = self.push_latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP pganalytics_push_latency_seconds Time to push one batch.\n# TYPE pganalytics_push_latency_seconds summary\npganalytics_push_latency_seconds_sum {sum}\npganalytics_push_latency_seconds_count {count}"
        );
        out
    }
}

/// Formats Prometheus labels, escaping values.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Serves `/healthz` and `/metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: std::sync::Arc<Metrics>) -> std::io::Result<()> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "`collector.listen` {addr} is not a loopback address; the health endpoint is local only"
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
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
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

    #[test]
    fn counters_render_with_labels_and_zero_defaults() {
        let metrics = Metrics::default();
        metrics.inc(
            "pganalytics_collection_failures_total",
            &labels(&[("plugin", "x"), ("reason", "deadline")]),
        );
        metrics.inc("pganalytics_batches_sent_total", "");
        metrics.set("pganalytics_spool_bytes", 42.0);
        let text = metrics.render();
        assert!(
            text.contains(
                "pganalytics_collection_failures_total{plugin=\"x\",reason=\"deadline\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("pganalytics_batches_sent_total 1"));
        assert!(text.contains("pganalytics_batches_dropped_total 0"));
        assert!(text.contains("pganalytics_spool_bytes 42"));
        assert_eq!(labels(&[("a", "q\"x")]), "a=\"q\\\"x\"");
    }
}
