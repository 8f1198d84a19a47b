//! Pushes spooled batches to the backend (`POST /api/v1/metrics/push`) and says what became of
//! each: delivered, rejected for good, or to be retried later. The sender never drops a batch
//! itself; the caller acks, dead-letters or keeps it according to [`Delivery`].

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use serde_json::value::RawValue;

use super::auth::{Auth, AuthError};
use super::encoding::BodyEncoding;
use super::transport::{self, ClientIdentity, TransportError};
use crate::config::{BackendConfig, Config, TlsConfig};
use crate::telemetry::{Metrics, labels};

/// Longest wait between two attempts, whatever the backoff or Retry-After says.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// First wait after a failure; doubles with each further failure.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What became of one push.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// 2xx: the backend has it.
    Delivered,
    /// The backend refused this batch for good (400, 413, 422) or the batch is unreadable: keep
    /// it aside with the reason, and go on with the next one.
    Rejected(String),
    /// Try again later (network error, TLS failure, 401 that could not be recovered, 429, 5xx,
    /// unexpected status). `after` is the backend's Retry-After, when it sent one.
    Retry {
        reason: String,
        cause: &'static str,
        after: Option<Duration>,
    },
}

pub struct Sender {
    backend: BackendConfig,
    tls: TlsConfig,
    auth: Auth,
    client: reqwest::Client,
    /// The registration certificate the client was built with, to rebuild it when it changes.
    client_cert: Option<String>,
    encoding: BodyEncoding,
    metrics: Arc<Metrics>,
}

/// The backend's answer to one POST.
struct Answer {
    status: StatusCode,
    after: Option<Duration>,
    said: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    #[error("no `[backend]` section in the config: the agent has nowhere to send its batches")]
    NoBackend,
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Sender {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, SenderError> {
        let backend = config.backend.clone().ok_or(SenderError::NoBackend)?;
        if !backend.url.to_ascii_lowercase().starts_with("https://") {
            tracing::warn!(
                url = %backend.url,
                "`backend.allow_insecure_http = true`: the token, the registration secret and every \
                 batch cross the network in clear; use https:// outside a lab"
            );
        }
        let auth = Auth::new(
            backend.clone(),
            config.collector.id.clone(),
            config.collector.hostname.clone(),
            config
                .collector
                .state_dir
                .as_ref()
                .map(|d| d.join("identity")),
        );
        let issued = auth.identity().and_then(|i| i.client_identity());
        let client = transport::build_client(&config.tls, issued.as_ref())?;
        let encoding = BodyEncoding::new(
            backend.compression,
            &backend.url,
            config.collector.state_dir.as_deref(),
        );
        Ok(Self {
            encoding,
            client_cert: issued.map(|i| i.cert_pem),
            backend,
            tls: config.tls.clone(),
            auth,
            client,
            metrics,
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Registers now (`pganalytics register`) and returns the collector id.
    pub async fn register(&mut self) -> Result<String, SenderError> {
        self.auth.register(&self.client).await?;
        self.rebuild_client_if_issued_cert_changed()?;
        Ok(self
            .auth
            .identity()
            .map(|i| i.collector_id.clone())
            .unwrap_or_default())
    }

    /// The collector id and a valid token, registering or refreshing first when needed.
    pub async fn bearer(&mut self) -> Result<(String, String), SenderError> {
        let bearer = self.auth.bearer(&self.client).await?;
        self.rebuild_client_if_issued_cert_changed()?;
        Ok(bearer)
    }

    /// After a 401: refresh the token, else register again.
    pub async fn recover(&mut self) -> Result<(), SenderError> {
        self.auth.recover(&self.client).await?;
        self.rebuild_client_if_issued_cert_changed()?;
        Ok(())
    }

    fn rebuild_client_if_issued_cert_changed(&mut self) -> Result<(), SenderError> {
        let issued: Option<ClientIdentity> = self.auth.identity().and_then(|i| i.client_identity());
        let cert = issued.as_ref().map(|i| i.cert_pem.clone());
        if cert != self.client_cert {
            self.client = transport::build_client(&self.tls, issued.as_ref())?;
            self.client_cert = cert;
        }
        Ok(())
    }

    /// Pushes spooled batches (envelopes as spooled) as one request: one batch as it is, several
    /// merged into one envelope (see [`merge`]). On a 401 the token is recovered once and the
    /// push tried again. In `compression = "auto"` mode a gzip body answered 400 or 415 is sent
    /// again at once as plain JSON (see [`BodyEncoding`]). A `Rejected` answer to several
    /// batches says nothing about which one the backend refused: the caller sends them one by
    /// one then.
    pub async fn push(&mut self, batches: &[&[u8]]) -> Delivery {
        for attempt in 0..2 {
            let (collector_id, token) = match self.bearer().await {
                Ok(bearer) => bearer,
                Err(e) => return retry("auth", e.to_string(), None),
            };
            // The backend requires the body's id to be the token's: batches spooled before
            // registration carry the configured name.
            let json = match merge(batches, &collector_id) {
                Ok(json) => json,
                Err(e) => return Delivery::Rejected(e),
            };
            let gzip = self.encoding.use_gzip();
            let mut answer = match self.post(&json, gzip, &token).await {
                Ok(answer) => answer,
                Err(delivery) => return delivery,
            };
            let refused_gzip = gzip
                && matches!(
                    answer.status,
                    StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE
                );
            // Whether the answer below is to a gzip body (not to a plain resend).
            let mut answered_gzip = gzip;
            if refused_gzip && self.encoding.may_fall_back() {
                answered_gzip = false;
                tracing::info!(
                    status = %answer.status,
                    "the backend refused a gzip body; sending the same batch uncompressed"
                );
                let first = format!("{}: {}", answer.status, answer.said);
                answer = match self.post(&json, false, &token).await {
                    Ok(answer) => answer,
                    Err(delivery) => return delivery,
                };
                self.metrics.inc(
                    "pganalytics_push_compression_fallbacks_total",
                    &labels(&[(
                        "result",
                        if answer.status.is_success() {
                            "accepted"
                        } else {
                            "refused"
                        },
                    )]),
                );
                if answer.status.is_success() {
                    self.encoding.remember_plain(&first).await;
                }
            } else if gzip && answer.status.is_success() {
                self.encoding.gzip_accepted().await;
            }
            let Answer {
                status,
                after,
                said,
            } = answer;
            match status {
                s if s.is_success() => return Delivery::Delivered,
                StatusCode::UNAUTHORIZED if attempt == 0 => {
                    self.metrics.inc(
                        "pganalytics_push_retries_total",
                        &labels(&[("cause", "401")]),
                    );
                    tracing::warn!("the backend refused the token (401): refreshing it");
                    if let Err(e) = self.recover().await {
                        return retry("auth", format!("401 and {e}"), None);
                    }
                }
                StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE if answered_gzip => {
                    return Delivery::Rejected(gzip_refused(status, &said));
                }
                StatusCode::BAD_REQUEST
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNPROCESSABLE_ENTITY => {
                    return Delivery::Rejected(format!("the backend answered {status}: {said}"));
                }
                StatusCode::TOO_MANY_REQUESTS => return retry("429", format!("{status}"), after),
                s if s.is_server_error() => {
                    return retry(
                        "5xx",
                        format!("the backend answered {status}: {said}"),
                        after,
                    );
                }
                _ => {
                    // 401 twice, 403, 404, ...: a configuration problem on one side or the
                    // other. Keep the batch and keep trying; the log says why.
                    return retry(
                        "status",
                        format!("the backend answered {status}: {said}"),
                        after,
                    );
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// One POST of `json`, gzip-compressed when `gzip`. `Err` is the delivery outcome of a
    /// request that got no answer.
    async fn post(&self, json: &[u8], gzip: bool, token: &str) -> Result<Answer, Delivery> {
        let mut request = self
            .client
            .post(format!("{}/api/v1/metrics/push", self.backend.url))
            .header(CONTENT_TYPE, "application/json")
            .bearer_auth(token);
        let body = if gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
            match compress(json) {
                Ok(body) => body,
                Err(e) => return Err(Delivery::Rejected(format!("cannot gzip the batch: {e}"))),
            }
        } else {
            json.to_vec()
        };
        let started = Instant::now();
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) => {
                let cause = if transport::is_tls(&e) {
                    "tls"
                } else {
                    "network"
                };
                return Err(retry(cause, transport::explain(&e), None));
            }
        };
        self.metrics.observe_push(started.elapsed());
        let status = response.status();
        let after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            after,
            said: truncate(text.trim(), 500),
        })
    }
}

/// Why a gzip body the backend refused is kept aside in `gzip` mode (in `auto` mode, why even
/// the plain resend was refused is the backend's own answer).
fn gzip_refused(status: StatusCode, said: &str) -> String {
    format!(
        "the backend answered {status} to a gzip body: {said} (`backend.compression = \"gzip\"` never \
         falls back; use \"auto\" or \"none\" for a backend that does not decode gzip)"
    )
}

/// The most batches one push carries.
pub const MAX_BATCHES_PER_PUSH: usize = 100;
/// The most JSON one push carries when it merges batches (a single larger batch goes alone).
/// Well under the body limits of common proxies; the backend reads the whole body.
pub const MAX_PUSH_BYTES: usize = 1 << 20;

/// An envelope as spooled: the header fields and the items, borrowed as raw JSON (the items
/// were validated before they were spooled; they are copied, not parsed into values).
#[derive(serde::Deserialize)]
struct Spooled<'a> {
    #[serde(borrow)]
    hostname: &'a RawValue,
    #[serde(borrow)]
    timestamp: &'a RawValue,
    #[serde(borrow, default)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    metrics: Vec<&'a RawValue>,
}

#[derive(serde::Serialize)]
struct Push<'a> {
    collector_id: &'a str,
    hostname: &'a RawValue,
    timestamp: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a RawValue>,
    metrics_count: usize,
    metrics: Vec<&'a RawValue>,
}

/// One envelope for `batches`, oldest first, sent as `collector_id`: their items in order, and
/// the newest batch's header (hostname, timestamp, version). Every item keeps its own
/// `timestamp`, so merging loses nothing the backend reads. The error says which batch is not
/// an envelope.
pub fn merge(batches: &[&[u8]], collector_id: &str) -> Result<Vec<u8>, String> {
    let mut spooled = Vec::with_capacity(batches.len());
    for (n, batch) in batches.iter().enumerate() {
        let envelope: Spooled<'_> = serde_json::from_slice(batch).map_err(|e| {
            let which = if batches.len() > 1 {
                format!(
                    "spooled batch {} of the {} in this push",
                    n + 1,
                    batches.len()
                )
            } else {
                "the spooled batch".to_owned()
            };
            format!("{which} is not an envelope: {e}")
        })?;
        spooled.push(envelope);
    }
    let Some(newest) = spooled.last() else {
        return Err("nothing to push".to_owned());
    };
    let metrics: Vec<&RawValue> = spooled
        .iter()
        .flat_map(|s| s.metrics.iter().copied())
        .collect();
    let push = Push {
        collector_id,
        hostname: newest.hostname,
        timestamp: newest.timestamp,
        version: newest.version,
        metrics_count: metrics.len(),
        metrics,
    };
    let size: usize = batches.iter().map(|b| b.len()).sum();
    let mut json = Vec::with_capacity(size + 256);
    serde_json::to_writer(&mut json, &push).map_err(|e| format!("cannot encode the push: {e}"))?;
    Ok(json)
}

/// gzip at the default level (6): about 3 points smaller than level 1 on real batches for
/// twice the CPU, which at the agent's few KB/s is noise.
fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
    encoder.write_all(json)?;
    encoder.finish()
}

fn retry(cause: &'static str, reason: String, after: Option<Duration>) -> Delivery {
    Delivery::Retry {
        reason,
        cause,
        after,
    }
}

/// Retry-After in seconds (the HTTP-date form is rare from APIs and treated as absent).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_DELAY))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}… (truncated)", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Exponential backoff with full jitter over the upper half: the wait after `failures`
/// consecutive failures is between half and all of `min(1 s × 2^(failures-1), MAX_RETRY_DELAY)`.
/// A Retry-After from the backend is a floor.
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = FIRST_RETRY_DELAY
        .saturating_mul(1 << exponent)
        .min(MAX_RETRY_DELAY);
    let jittered = ceiling.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    jittered.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        for _ in 0..100 {
            let first = backoff(1, None);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let fourth = backoff(4, None);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8));
            assert!(backoff(40, None) <= MAX_RETRY_DELAY);
            assert!(backoff(40, None) >= MAX_RETRY_DELAY / 2);
            assert!(backoff(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_capped() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(RETRY_AFTER, "999999".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_DELAY));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn merged_batches_keep_every_item_in_order_under_the_newest_header() {
        let first = br#"{"collector_id":"configured","hostname":"db1","timestamp":"2026-12-06T10:00:00.000Z","version":"0.1.0","metrics_count":2,"metrics":[{"type":"sysstat","timestamp":"2026-12-06T10:00:00Z","n":1},{"type":"disk_usage","timestamp":"2026-12-06T10:00:00Z","big":18446744073709551615}]}"#;
        let second = br#"{"collector_id":"configured","hostname":"db1","timestamp":"2026-12-06T10:00:30.000Z","version":"0.1.1","metrics_count":1,"metrics":[{"type":"pg_log","timestamp":"2026-12-06T10:00:30Z","entries":[]}]}"#;
        let merged = merge(&[first, second], "issued-id").unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(envelope["collector_id"], "issued-id");
        assert_eq!(envelope["timestamp"], "2026-12-06T10:00:30.000Z");
        assert_eq!(envelope["version"], "0.1.1");
        assert_eq!(envelope["metrics_count"], 3);
        let types: Vec<&str> = envelope["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["sysstat", "disk_usage", "pg_log"]);
        // Items are copied as written: no number goes through a float.
        assert!(
            String::from_utf8(merged.clone())
                .unwrap()
                .contains(r#""big":18446744073709551615"#)
        );
        // One batch is the batch itself, with the id replaced.
        let alone: serde_json::Value =
            serde_json::from_slice(&merge(&[first], "issued-id").unwrap()).unwrap();
        let mut expected: serde_json::Value = serde_json::from_slice(first).unwrap();
        expected["collector_id"] = "issued-id".into();
        assert_eq!(alone, expected);
    }

    #[test]
    fn a_batch_that_is_not_an_envelope_is_named() {
        let good = br#"{"hostname":"h","timestamp":"t","metrics":[]}"#;
        let error = merge(&[good, b"{not json"], "id").unwrap_err();
        assert!(
            error.starts_with("spooled batch 2 of the 2 in this push is not an envelope"),
            "{error}"
        );
        let error = merge(&[br#"{"hostname":"h","metrics":[]}"#], "id").unwrap_err();
        assert!(
            error.starts_with("the spooled batch is not an envelope: missing field `timestamp`"),
            "{error}"
        );
    }

    #[test]
    fn long_backend_answers_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(20);
        assert_eq!(truncate(&long, 3), "ééé… (truncated)");
    }
}
