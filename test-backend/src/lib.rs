//! A fake of the pgAnalytics API over HTTPS, for end-to-end tests of the monitoring agent.
//!
//! [`TestBackend::start`] binds `127.0.0.1:0` (loopback only), serves TLS with a certificate
//! valid for `localhost`, `127.0.0.1` and `::1`, and implements the contract of DESIGN.md,
//! section "Backend contract (pgAnalytics API)":
//!
//! | endpoint | success | failures |
//! | --- | --- | --- |
//! | `POST /api/v1/collectors/register` (header `X-Registration-Secret`, body `{name, hostname, address?, version?}`) | 200 `{collector_id, token, certificate, private_key, expires_at}` | 401 secret missing, 403 secret wrong, 400 bad body |
//! | `POST /api/v1/collectors/refresh-token` (`Authorization: Bearer <valid token>`) | 200 `{token, expires_at}` | 401 |
//! | `POST /api/v1/metrics/push` (Bearer, `Content-Type: application/json`, a plain JSON body; gzip only with [`BackendConfig::accept_gzip`]) | 200 (configurable) `{status: "success", collector_id, metrics_inserted, ...}`; the envelope is recorded, `pg_query_stats` rows stored or dropped as the real backend would | 401 bad/expired/revoked token or collector id mismatch, 400 body the real backend cannot decode (a gzip body included) / envelope against DESIGN.md / content type / rejected by a test predicate, 413 too large, 500 a metric whose `type` is not a string (with `contract_checks` off) |
//! | `GET /api/v1/config/{collector_id}` (Bearer) | 200, TOML text, header `X-Config-Version` | 401 bad token, 403 token of another collector, 404 no config set |
//! | `GET /health` | 200 `{"status":"ok"}` | |
//!
//! Every error body is JSON with an `"error"` string (push errors the real backend would give
//! also carry its `code`, `message` and `details`); bad request data never panics the server.
//! HTTP/1.1 and HTTP/2 are both served (ALPN `h2`, `http/1.1`).
//!
//! # The push contract
//! A push is decoded the way the real backend's Go handler decodes it, rule for rule: see
//! [`contract`], which describes that handler (torresglauco/pganalytics-v3,
//! `handleMetricsPush`). In short: it does not decode `Content-Encoding: gzip` (a gzip body
//! answers 400; [`BackendConfig::accept_gzip`] is the lenient mode for tests that need it);
//! the envelope's fields must have their Go types (`collector_id`, `hostname`, `version`
//! strings, `timestamp` RFC 3339, `metrics_count` an integer, `metrics` an array), else 400;
//! a token for another collector is 401; of the items it stores only `pg_query_stats`, decoding
//! each into Go structs (`queries[].hash` an `int64`, counters `int64`, times `float64`), and an
//! item that does not decode is dropped while the push still answers 200. Stored rows are in
//! [`TestBackend::query_stats`], dropped items in [`TestBackend::dropped_items`]: a test that
//! pushes query statistics should check that nothing was dropped.
//!
//! On top of the real decoding, with [`BackendConfig::contract_checks`] (the default), the
//! checks of DESIGN.md that the real backend does not make: `Content-Type: application/json`,
//! a known `Content-Encoding`, and [`validate_envelope`] (count equal to the array, UTC
//! timestamp, every item an object with a string `type` and an RFC 3339 `timestamp`).
//!
//! # Tokens
//! HS256 JWTs signed with [`BackendConfig::jwt_secret`], claims `collector_id, hostname,
//! type:"access", exp, iat, nbf, sub:"collector:<id>"` plus a `jti` that lets
//! [`TestBackend::revoke_tokens_issued_before`] know the exact issue time. Lifetimes have second
//! granularity: `exp = floor(now) + ceil(lifetime)`, and a token is expired from second `exp`
//! on (no leeway). Tokens the agent signs itself with the shared secret ("shared-secret mode")
//! are accepted as long as the signature and claims are right; collector ids never registered
//! are accepted while [`BackendConfig::accept_unregistered`] is true (the default).
//!
//! # Certificates
//! Two CAs (see [`Pki`]): [`TestBackend::ca_pem`] signed the server certificate (give it to the
//! agent as `tls.ca_file`); a separate client CA ([`TestBackend::client_ca_pem`]) signs the
//! client certificates handed out at registration and by [`TestBackend::client_cert_for`].
//! With [`BackendConfig::require_client_cert`] the handshake fails without a client certificate
//! from that CA; without it a client certificate is optional but, when presented, must still be
//! valid (its CN is then recorded).
//!
//! # Fault injection
//! [`TestBackend::fail_next`] (429/5xx with `Retry-After`), [`TestBackend::reject_batches_where`]
//! (400), [`TestBackend::revoke_tokens_issued_before`] (401), [`TestBackend::set_push_delay`],
//! [`TestBackend::stop`] / [`TestBackend::restart`] (connection refused, then back on the same
//! port with the same certificates and records). Injected failures are answered before any
//! other check, like an overloaded proxy in front of the API would.
//!
//! # Runtime
//! Needs a Tokio runtime (the server runs as tasks on the runtime that calls `start`). The
//! current-thread runtime of a plain `#[tokio::test]` works as long as the test does not block
//! it; when the agent under test runs in-process with blocking calls, use
//! `#[tokio::test(flavor = "multi_thread")]`.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use test_backend::{BackendConfig, TestBackend};
//!
//! let backend = TestBackend::start(BackendConfig::default()).await;
//! std::fs::write("/tmp/ca.pem", backend.ca_pem()).unwrap();
//! // ... run the agent against backend.url() ...
//! let batches = backend.wait_for_batches(1, Duration::from_secs(30)).await.unwrap();
//! assert_eq!(batches[0].envelope["metrics_count"], 3);
//! # }
//! ```

pub mod contract;
mod pki;
mod server;
mod tokens;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use contract::{DecodeError, DropReason, DroppedItem, StoredQueryStat};
pub use pki::Pki;
pub use server::validate_envelope;
pub use tokens::{access_claims, sign_hs256};

/// Seconds since the Unix epoch now (for building `iat`/`exp` claims).
pub fn unix_now() -> i64 {
    tokens::unix_secs(SystemTime::now())
}

/// Default HS256 secret of [`BackendConfig::default`] (write it to the agent's shared-secret
/// file for shared-secret mode, or use [`TestBackend::jwt_secret`]).
pub const DEFAULT_JWT_SECRET: &[u8] = b"pganalytics-test-backend-jwt-secret-0123456789";
/// Default registration secret of [`BackendConfig::default`].
pub const DEFAULT_REGISTRATION_SECRET: &str = "test-registration-secret";

/// How a [`TestBackend`] behaves. Everything here is fixed for the life of one started
/// instance; use the `TestBackend` methods for what changes at run time.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// HS256 key for issuing and verifying tokens (also the agent's shared secret).
    pub jwt_secret: Vec<u8>,
    /// Expected value of `X-Registration-Secret`.
    pub registration_secret: String,
    /// Lifetime of issued tokens (default 30 minutes; second granularity, rounded up).
    pub token_lifetime: Duration,
    /// Fail the TLS handshake unless the client presents a certificate from the client CA.
    pub require_client_cert: bool,
    /// Speak only TLS 1.2 (a client requiring TLS 1.3 fails the handshake).
    pub tls12_only: bool,
    /// Accept tokens whose `collector_id` never registered here (shared-secret mode).
    pub accept_unregistered: bool,
    /// Require `type:"access"`, `sub:"collector:<collector_id>"` and `iat` in tokens
    /// (signature, `exp`, `nbf` and `collector_id` are always checked). Default true.
    pub strict_claims: bool,
    /// Status of an accepted push: 200 (default, the real backend's) or 201.
    pub push_success_status: u16,
    /// Lenient mode: gunzip bodies sent with `Content-Encoding: gzip`. The real backend does
    /// not, so by default a gzip body is decoded as it is and answers 400 (default false).
    pub accept_gzip: bool,
    /// Also enforce DESIGN.md's stricter rules (content type, known encoding,
    /// [`validate_envelope`]); false leaves exactly the real backend's decoding (default true).
    pub contract_checks: bool,
    /// Limit of a request body, compressed and after gunzip (413 beyond). Default 64 MiB.
    pub max_body_bytes: usize,
    /// Certificates to reuse (e.g. from [`TestBackend::pki`] of an earlier instance);
    /// `None` generates new ones.
    pub pki: Option<Pki>,
    /// Record (batch and stored query-stat rows) only the first this many pushes; later ones
    /// are answered the same and only counted ([`TestBackend::pushes_not_recorded`]). For long
    /// runs whose every push would not fit in memory as parsed JSON. Default: all.
    pub record_pushes: Option<usize>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            jwt_secret: DEFAULT_JWT_SECRET.to_vec(),
            registration_secret: DEFAULT_REGISTRATION_SECRET.to_string(),
            token_lifetime: Duration::from_secs(30 * 60),
            require_client_cert: false,
            tls12_only: false,
            accept_unregistered: true,
            strict_claims: true,
            push_success_status: 200,
            accept_gzip: false,
            contract_checks: true,
            max_body_bytes: 64 << 20,
            pki: None,
            record_pushes: None,
        }
    }
}

/// An accepted push, as recorded in arrival order.
#[derive(Clone, Debug)]
pub struct RecordedBatch {
    /// The (gunzipped, parsed) envelope.
    pub envelope: Value,
    /// Whether the body came with `Content-Encoding: gzip`.
    pub gzipped: bool,
    /// CN of the TLS client certificate, if one was presented.
    pub client_cn: Option<String>,
    /// `collector_id` claim of the token used.
    pub token_collector_id: String,
    /// Size of the body on the wire (compressed size when gzipped).
    pub body_bytes: usize,
    /// All request headers (lower-case names, lossy UTF-8 values), in order.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub received_at: SystemTime,
    /// `pg_query_stats` rows the real backend would have stored from this batch.
    pub stored_rows: usize,
    /// `pg_query_stats` items the real backend would have dropped (while answering 2xx).
    pub dropped_items: Vec<DroppedItem>,
}

impl RecordedBatch {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// The `metrics` array of the envelope (empty if absent).
    pub fn metrics(&self) -> &[Value] {
        self.envelope
            .get("metrics")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Any request the backend answered (including injected failures and rejections).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status returned.
    pub status: u16,
    /// The `error` message of the JSON error body, for non-2xx answers.
    pub error: Option<String>,
    /// `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub http_version: String,
    pub client_cn: Option<String>,
    /// All request headers (lower-case names, lossy UTF-8 values), in order.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: SystemTime,
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }
}

/// A successful registration.
#[derive(Clone, Debug)]
pub struct Registration {
    pub collector_id: String,
    pub name: String,
    pub hostname: String,
    pub address: Option<String>,
    pub version: Option<String>,
    pub client_cn: Option<String>,
    pub at: SystemTime,
}

/// A TLS handshake the server refused or that broke off (e.g. no client certificate while one
/// is required, or a client insisting on TLS 1.3 against `tls12_only`).
#[derive(Clone, Debug)]
pub struct TlsFailure {
    pub peer: SocketAddr,
    pub error: String,
    pub at: SystemTime,
}

/// Endpoints that faults can be injected into with [`TestBackend::fail_next_on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Register,
    RefreshToken,
    Push,
    Config,
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

pub(crate) type Predicate = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

#[derive(Default)]
pub(crate) struct State {
    pub batches: Vec<RecordedBatch>,
    /// Rows stored from every push, including those of a push that then answered 500.
    pub query_stats: Vec<StoredQueryStat>,
    pub requests: Vec<RecordedRequest>,
    pub registrations: Vec<Registration>,
    pub tls_failures: Vec<TlsFailure>,
    pub known_collectors: HashSet<String>,
    pub faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub reject: Vec<Predicate>,
    pub revoked_before: Option<SystemTime>,
    /// jti → exact issue time of tokens this backend signed.
    pub issued: HashMap<String, SystemTime>,
    pub config: Option<(u64, String)>,
    pub config_for: HashMap<String, (u64, String)>,
    pub push_delay: Option<Duration>,
    /// Pushes past `record_pushes`: answered, not recorded.
    pub pushes_not_recorded: usize,
}

impl State {
    /// Whether a push arriving now is recorded (see [`BackendConfig::record_pushes`]).
    pub fn records_push(&self, config: &BackendConfig) -> bool {
        config
            .record_pushes
            .is_none_or(|limit| self.batches.len() < limit)
    }
}

pub(crate) struct Shared {
    pub config: BackendConfig,
    pub pki: Pki,
    pub state: Mutex<State>,
}

impl Shared {
    /// Locks the state; a panic elsewhere (e.g. in a test predicate) must not poison it.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running (or stopped) fake backend. Dropping it stops the server.
pub struct TestBackend {
    shared: Arc<Shared>,
    port: u16,
    running: Option<Running>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestBackend {
    /// Starts on `127.0.0.1` with a free port.
    ///
    /// # Panics
    /// If the listener cannot be bound or the certificates cannot be made (see
    /// [`TestBackend::try_start_on`]).
    pub async fn start(config: BackendConfig) -> TestBackend {
        Self::start_on(0, config).await
    }

    /// Starts on `127.0.0.1:port` (0 = any free port). Panics like [`TestBackend::start`].
    pub async fn start_on(port: u16, config: BackendConfig) -> TestBackend {
        match Self::try_start_on(port, config).await {
            Ok(b) => b,
            Err(e) => panic!("test-backend: cannot start on 127.0.0.1:{port}: {e}"),
        }
    }

    /// Starts on `127.0.0.1:port`, reporting failures instead of panicking.
    pub async fn try_start_on(port: u16, mut config: BackendConfig) -> io::Result<TestBackend> {
        let pki = match config.pki.take() {
            Some(p) => p,
            None => Pki::generate().map_err(io::Error::other)?,
        };
        let shared = Arc::new(Shared {
            config,
            pki,
            state: Mutex::new(State::default()),
        });
        let mut backend = TestBackend {
            shared,
            port,
            running: None,
        };
        backend.listen().await?;
        Ok(backend)
    }

    async fn listen(&mut self) -> io::Result<()> {
        let tls = server::tls_config(&self.shared.config, &self.shared.pki)?;
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], self.port)))?;
        let listener = socket.listen(1024)?;
        self.port = listener.local_addr()?.port();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, tls, self.shared.clone(), rx));
        self.running = Some(Running { shutdown: tx, task });
        Ok(())
    }

    /// Closes the listener and every open connection; until [`TestBackend::restart`] clients
    /// get "connection refused". Records and settings stay available. Idempotent.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.shutdown.send(());
            let _ = running.task.await;
        }
    }

    /// Listens again on the same port with the same certificates, settings and records (stops
    /// first if running).
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        self.listen().await
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// `https://127.0.0.1:PORT` (the certificate is valid for this too).
    pub fn ip_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that signed the server certificate (the agent's `tls.ca_file`).
    pub fn ca_pem(&self) -> String {
        self.shared.pki.ca_pem()
    }

    /// PEM of the CA that signs client certificates.
    pub fn client_ca_pem(&self) -> String {
        self.shared.pki.client_ca_pem()
    }

    /// The certificate material, to start another instance the agent trusts
    /// (`BackendConfig { pki: Some(backend.pki()), .. }`).
    pub fn pki(&self) -> Pki {
        self.shared.pki.clone()
    }

    /// `(certificate PEM, private key PEM)` with subject CN `cn`, signed by the client CA.
    pub fn client_cert_for(&self, cn: &str) -> (String, String) {
        self.shared.pki.client_cert_for(cn)
    }

    /// The HS256 secret (for the agent's shared-secret file).
    pub fn jwt_secret(&self) -> Vec<u8> {
        self.shared.config.jwt_secret.clone()
    }

    /// The expected `X-Registration-Secret`.
    pub fn registration_secret(&self) -> String {
        self.shared.config.registration_secret.clone()
    }

    /// A token like the backend issues (hostname `"test-host"`), valid for `lifetime`.
    pub fn issue_token(&self, collector_id: &str, lifetime: Duration) -> String {
        let now = SystemTime::now();
        server::issue_token(&self.shared, collector_id, "test-host", now, lifetime).0
    }

    /// A correctly signed token whose `exp` lies `ago` in the past (at least 1 s).
    pub fn issue_expired_token(&self, collector_id: &str, ago: Duration) -> String {
        let now = tokens::unix_secs(SystemTime::now());
        let exp = now - tokens::ceil_secs(ago).max(1);
        let iat = exp - 60;
        let claims = access_claims(collector_id, "test-host", iat, exp, None);
        sign_hs256(&self.shared.config.jwt_secret, &claims)
    }

    /// Signs arbitrary claims with the backend's secret (for malformed-claim tests).
    pub fn sign_claims(&self, claims: &Value) -> String {
        sign_hs256(&self.shared.config.jwt_secret, claims)
    }

    /// Config served to every collector: TOML text and its `X-Config-Version`.
    pub fn set_config(&self, version: u64, toml: &str) {
        self.shared.lock().config = Some((version, toml.to_string()));
    }

    /// Config served to one collector (takes precedence over [`TestBackend::set_config`]).
    pub fn set_config_for(&self, collector_id: &str, version: u64, toml: &str) {
        self.shared
            .lock()
            .config_for
            .insert(collector_id.to_string(), (version, toml.to_string()));
    }

    /// Removes all configs (the endpoint answers 404 again).
    pub fn clear_config(&self) {
        let mut st = self.shared.lock();
        st.config = None;
        st.config_for.clear();
    }

    /// The next `n` push requests are answered with `status` (and `Retry-After: <seconds>`
    /// when given) without being looked at. Calls queue up behind each other.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<Duration>) {
        self.fail_next_on(Endpoint::Push, n, status, retry_after);
    }

    /// Like [`TestBackend::fail_next`] for any endpoint.
    pub fn fail_next_on(
        &self,
        endpoint: Endpoint,
        n: usize,
        status: u16,
        retry_after: Option<Duration>,
    ) {
        let mut st = self.shared.lock();
        let queue = st.faults.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(
            Fault {
                status,
                retry_after,
            },
            n,
        ));
    }

    /// Drops all pending injected failures.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Injected failures not yet used up, for an endpoint.
    pub fn pending_faults(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .faults
            .get(&endpoint)
            .map_or(0, VecDeque::len)
    }

    /// Valid envelopes for which `predicate` returns true are answered 400
    /// `{"error": "batch rejected by test predicate"}` and not recorded as batches. Several
    /// predicates may be set; any match rejects.
    pub fn reject_batches_where(&self, predicate: impl Fn(&Value) -> bool + Send + Sync + 'static) {
        self.shared.lock().reject.push(Arc::new(predicate));
    }

    /// Removes the predicates of [`TestBackend::reject_batches_where`].
    pub fn clear_reject_predicates(&self) {
        self.shared.lock().reject.clear();
    }

    /// Tokens issued before `when` answer 401 from now on. Exact for tokens this backend issued
    /// (they carry a `jti`); for others (shared-secret mode) the second-granular `iat` is
    /// compared, so a self-signed token made within the same second as `when` counts as
    /// earlier: wait a second after revoking before expecting new self-signed tokens to pass.
    pub fn revoke_tokens_issued_before(&self, when: SystemTime) {
        self.shared.lock().revoked_before = Some(when);
    }

    /// Delay before answering each push (to trigger agent timeouts); `None` to stop. Pushes
    /// are validated and recorded only after the delay, so a client that gave up in the
    /// meantime leaves a recorded batch only if the connection stayed open.
    pub fn set_push_delay(&self, delay: Option<Duration>) {
        self.shared.lock().push_delay = delay;
    }

    /// Pushes accepted beyond [`BackendConfig::record_pushes`], and so not in [`Self::batches`].
    pub fn pushes_not_recorded(&self) -> usize {
        self.shared.lock().pushes_not_recorded
    }

    /// Accepted pushes in arrival order.
    pub fn batches(&self) -> Vec<RecordedBatch> {
        self.shared.lock().batches.clone()
    }

    /// All metric items of all accepted pushes, in order.
    pub fn metrics(&self) -> Vec<Value> {
        let st = self.shared.lock();
        st.batches
            .iter()
            .flat_map(|b| b.metrics().iter().cloned())
            .collect()
    }

    /// Metric items of one `type`, in order.
    pub fn metrics_of_type(&self, kind: &str) -> Vec<Value> {
        self.metrics()
            .into_iter()
            .filter(|m| m.get("type").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    /// The `pg_query_stats` rows the real backend would have stored, in order (see
    /// [`contract`]: the hash is the queryid after Go's trip through `float64`).
    pub fn query_stats(&self) -> Vec<StoredQueryStat> {
        self.shared.lock().query_stats.clone()
    }

    /// The `pg_query_stats` items of accepted batches that the real backend would have dropped
    /// (it answers 200 all the same): `(batch index, item)`. Empty is what a test wants.
    pub fn dropped_items(&self) -> Vec<(usize, DroppedItem)> {
        let st = self.shared.lock();
        st.batches
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.dropped_items.iter().map(move |d| (i, d.clone())))
            .collect()
    }

    /// Every answered request in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Successful registrations in order.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.lock().registrations.clone()
    }

    /// Refused or broken TLS handshakes in order.
    pub fn tls_failures(&self) -> Vec<TlsFailure> {
        self.shared.lock().tls_failures.clone()
    }

    /// Forgets recorded batches, stored rows, requests, registrations and TLS failures
    /// (settings, faults and known collectors stay).
    pub fn clear_records(&self) {
        let mut st = self.shared.lock();
        st.batches.clear();
        st.query_stats.clear();
        st.requests.clear();
        st.registrations.clear();
        st.tls_failures.clear();
    }

    /// Waits until at least `n` batches are recorded: `Ok(all batches)`, or `Err(the batches
    /// seen)` after `timeout`.
    pub async fn wait_for_batches(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedBatch>, Vec<RecordedBatch>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let batches = self.batches();
            if batches.len() >= n {
                return Ok(batches);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(batches);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` TLS failures are recorded (the server records a refused
    /// handshake just after sending its alert, so a client may see the error first):
    /// `Ok(all failures)`, or `Err(the failures seen)` after `timeout`.
    pub async fn wait_for_tls_failures(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<TlsFailure>, Vec<TlsFailure>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let failures = self.tls_failures();
            if failures.len() >= n {
                return Ok(failures);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failures);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the first recorded request matching `predicate`.
    pub async fn wait_for_request(
        &self,
        predicate: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| predicate(r)) {
                return Some(r);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Aborting the accept task drops the listener and the JoinSet of connections,
            // which aborts (and so closes) every connection.
            running.task.abort();
        }
    }
}

/// A free TCP port on 127.0.0.1 (for an agent's `[collector] listen` or a backend restarted on
/// the same port).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0")
}

/// A plain-HTTP GET of `path` on an agent's own loopback listener (`/healthz`, `/metrics`):
/// the whole response, head included, or `None` when it cannot be fetched.
pub fn agent_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the first line of an agent's `/metrics` that starts with `line_prefix`
/// (a metric name with its labels).
pub fn agent_metric(port: u16, line_prefix: &str) -> Option<f64> {
    metric_value(&agent_get(port, "/metrics")?, line_prefix)
}

/// The value of the first line of a `/metrics` text that starts with `line_prefix`; for
/// reading several metrics of one scrape.
pub fn metric_value(metrics: &str, line_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
