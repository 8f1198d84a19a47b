//! The TLS listener, connection handling and the API handlers.

use std::convert::Infallible;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ring::rand::SecureRandom;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::contract;
use crate::tokens::{self, VerifiedToken};
use crate::{
    BackendConfig, Endpoint, Pki, RecordedBatch, RecordedRequest, Registration, Shared, TlsFailure,
};

type Resp = Response<Full<Bytes>>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn tls_config(config: &BackendConfig, pki: &Pki) -> io::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if config.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.client_ca_der()).map_err(io::Error::other)?;
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let verifier = if config.require_client_cert {
        builder.build()
    } else {
        builder.allow_unauthenticated().build()
    }
    .map_err(io::Error::other)?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(io::Error::other)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server_cert_der()], pki.server_key_der())
        .map_err(io::Error::other)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accept loop: runs until `shutdown` fires (or is dropped), then closes the listener and
/// aborts every connection, waiting until they are gone.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    conns.spawn(connection(tcp, acceptor.clone(), shared.clone()));
                }
                // E.g. out of file descriptors: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let peer = match tcp.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return tls_failure(&shared, peer, e.to_string()),
        Err(_) => return tls_failure(&shared, peer, "handshake timed out".into()),
    };
    let client_cn = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| crate::pki::common_name(c.as_ref()));
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let client_cn = client_cn.clone();
        async move { Ok::<_, Infallible>(handle(&shared, client_cn, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), svc)
        .await;
}

fn tls_failure(shared: &Shared, peer: std::net::SocketAddr, error: String) {
    shared.lock().tls_failures.push(TlsFailure {
        peer,
        error,
        at: SystemTime::now(),
    });
}

/// A finished answer: status, JSON or text body, extra headers.
struct Answer {
    status: u16,
    body: Bytes,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    error: Option<String>,
}

impl Answer {
    fn json(status: u16, value: &Value) -> Answer {
        Answer {
            status,
            body: Bytes::from(value.to_string()),
            content_type: "application/json",
            headers: Vec::new(),
            error: None,
        }
    }

    fn error(status: u16, msg: impl Into<String>) -> Answer {
        let msg = msg.into();
        let mut a = Answer::json(status, &json!({ "error": msg }));
        if status == 401 {
            a.headers
                .push(("www-authenticate", "Bearer error=\"invalid_token\"".into()));
        }
        a.error = Some(msg);
        a
    }

    /// An error in the real backend's shape (`apperrors.AppError`): `{code, message,
    /// details}`, plus `error` so that every answer of this fake has one.
    fn go_error(status: u16, message: &str, details: &str) -> Answer {
        let error = if details.is_empty() {
            message.to_owned()
        } else {
            format!("{message}: {details}")
        };
        let mut body = json!({ "code": status, "message": message, "error": error });
        if !details.is_empty() {
            body["details"] = json!(details);
        }
        let mut a = Answer::json(status, &body);
        a.error = Some(error);
        a
    }

    fn into_response(self) -> Resp {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        resp
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Request data the handlers need, with the body still unread.
struct Ctx<'a> {
    shared: &'a Shared,
    client_cn: Option<String>,
    headers: HeaderMap,
    header_list: Vec<(String, String)>,
    at: SystemTime,
}

async fn handle(shared: &Shared, client_cn: Option<String>, req: Request<Incoming>) -> Resp {
    let at = SystemTime::now();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let http_version = format!("{:?}", req.version());
    let (parts, body) = req.into_parts();
    let ctx = Ctx {
        shared,
        client_cn,
        header_list: header_list(&parts.headers),
        headers: parts.headers,
        at,
    };

    let route = parts.uri.path();
    let answer = match (route, &method) {
        ("/api/v1/collectors/register", &Method::POST) => register(&ctx, body).await,
        ("/api/v1/collectors/refresh-token", &Method::POST) => refresh(&ctx).await,
        ("/api/v1/metrics/push", &Method::POST) => push(&ctx, body).await,
        ("/health" | "/api/v1/health", &Method::GET) => Answer::json(200, &json!({"status": "ok"})),
        (p, &Method::GET) if p.starts_with("/api/v1/config/") => {
            config(&ctx, &p["/api/v1/config/".len()..]).await
        }
        (
            "/api/v1/collectors/register"
            | "/api/v1/collectors/refresh-token"
            | "/api/v1/metrics/push",
            _,
        ) => Answer::error(405, format!("method {method} not allowed")),
        (p, _) if p.starts_with("/api/v1/config/") => {
            Answer::error(405, format!("method {method} not allowed"))
        }
        (p, _) => Answer::error(404, format!("no route for {p}")),
    };

    shared.lock().requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        status: answer.status,
        error: answer.error.clone(),
        http_version,
        client_cn: ctx.client_cn.clone(),
        headers: ctx.header_list.clone(),
        at,
    });
    answer.into_response()
}

/// The next injected failure for `endpoint`, if any.
fn injected(shared: &Shared, endpoint: Endpoint) -> Option<Answer> {
    let fault = shared.lock().faults.get_mut(&endpoint)?.pop_front()?;
    let mut a = Answer::error(fault.status, format!("injected failure ({})", fault.status));
    if let Some(ra) = fault.retry_after {
        a.headers
            .push(("retry-after", tokens::ceil_secs(ra).to_string()));
    }
    Some(a)
}

enum BodyError {
    TooLarge,
    Io(String),
}

async fn read_body(body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Io(e.to_string())),
    }
}

fn body_error(e: BodyError) -> Answer {
    match e {
        BodyError::TooLarge => Answer::error(413, "request body too large"),
        BodyError::Io(e) => Answer::error(400, format!("cannot read request body: {e}")),
    }
}

/// Checks the Bearer token: exact `Bearer ` prefix, signature, claims, revocation, and (unless
/// `accept_unregistered`) that the collector registered here.
fn authenticate(ctx: &Ctx<'_>) -> Result<VerifiedToken, Answer> {
    let shared = ctx.shared;
    let auth = match ctx.headers.get("authorization") {
        None => return Err(Answer::error(401, "missing Authorization header")),
        Some(v) => v
            .to_str()
            .map_err(|_| Answer::error(401, "Authorization header is not ASCII"))?,
    };
    let token = auth
        .strip_prefix("Bearer ")
        .ok_or_else(|| Answer::error(401, "Authorization must be \"Bearer <token>\""))?;
    let verified = tokens::verify(
        &shared.config.jwt_secret,
        token,
        shared.config.strict_claims,
        SystemTime::now(),
    )
    .map_err(|e| Answer::error(401, e))?;
    let st = shared.lock();
    if let Some(before) = st.revoked_before {
        let issued = verified
            .jti
            .as_ref()
            .and_then(|j| st.issued.get(j).copied())
            .or_else(|| {
                let iat = u64::try_from(verified.iat?).ok()?;
                SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(iat))
            });
        if issued.is_none_or(|t| t < before) {
            return Err(Answer::error(401, "token revoked"));
        }
    }
    if !shared.config.accept_unregistered && !st.known_collectors.contains(&verified.collector_id) {
        return Err(Answer::error(
            401,
            format!("unknown collector {:?}", verified.collector_id),
        ));
    }
    Ok(verified)
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // Practically impossible; fall back to the clock so ids stay distinct.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Signs an access token and remembers its exact issue time. Returns `(token, exp)`.
pub(crate) fn issue_token(
    shared: &Shared,
    collector_id: &str,
    hostname: &str,
    now: SystemTime,
    lifetime: Duration,
) -> (String, i64) {
    let iat = tokens::unix_secs(now);
    let exp = iat.saturating_add(tokens::ceil_secs(lifetime));
    let jti = random_hex(16);
    let claims = tokens::access_claims(collector_id, hostname, iat, exp, Some(&jti));
    let token = tokens::sign_hs256(&shared.config.jwt_secret, &claims);
    shared.lock().issued.insert(jti, now);
    (token, exp)
}

fn opt_string(v: &Value, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn required_string(v: &Value, key: &str) -> Result<String, String> {
    match opt_string(v, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{key} is required (non-empty string)")),
    }
}

async fn register(ctx: &Ctx<'_>, body: Incoming) -> Answer {
    let shared = ctx.shared;
    if let Some(a) = injected(shared, Endpoint::Register) {
        return a;
    }
    match ctx.headers.get("x-registration-secret") {
        None => return Answer::error(401, "missing X-Registration-Secret header"),
        Some(v) if v.as_bytes() != shared.config.registration_secret.as_bytes() => {
            return Answer::error(403, "invalid registration secret");
        }
        Some(_) => {}
    }
    let bytes = match read_body(body, shared.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let req: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Answer::error(400, "body must be a JSON object"),
        Err(e) => return Answer::error(400, format!("invalid JSON: {e}")),
    };
    let fields = (|| {
        Ok::<_, String>((
            required_string(&req, "name")?,
            required_string(&req, "hostname")?,
            opt_string(&req, "address")?,
            opt_string(&req, "version")?,
        ))
    })();
    let (name, hostname, address, version) = match fields {
        Ok(f) => f,
        Err(e) => return Answer::error(400, e),
    };

    let h = random_hex(16);
    let collector_id = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let now = SystemTime::now();
    let (token, exp) = issue_token(
        shared,
        &collector_id,
        &hostname,
        now,
        shared.config.token_lifetime,
    );
    let (certificate, private_key) = match shared.pki.try_client_cert(
        &collector_id,
        now - Duration::from_secs(86_400),
        now + Duration::from_secs(365 * 86_400),
    ) {
        Ok(c) => c,
        Err(e) => return Answer::error(500, format!("cannot issue certificate: {e}")),
    };
    {
        let mut st = shared.lock();
        st.known_collectors.insert(collector_id.clone());
        st.registrations.push(Registration {
            collector_id: collector_id.clone(),
            name,
            hostname,
            address,
            version,
            client_cn: ctx.client_cn.clone(),
            at: ctx.at,
        });
    }
    Answer::json(
        200,
        &json!({
            "collector_id": collector_id,
            "token": token,
            "certificate": certificate,
            "private_key": private_key,
            "expires_at": rfc3339(exp),
        }),
    )
}

async fn refresh(ctx: &Ctx<'_>) -> Answer {
    if let Some(a) = injected(ctx.shared, Endpoint::RefreshToken) {
        return a;
    }
    let verified = match authenticate(ctx) {
        Ok(v) => v,
        Err(a) => return a,
    };
    let (token, exp) = issue_token(
        ctx.shared,
        &verified.collector_id,
        &verified.hostname,
        SystemTime::now(),
        ctx.shared.config.token_lifetime,
    );
    Answer::json(200, &json!({"token": token, "expires_at": rfc3339(exp)}))
}

async fn config(ctx: &Ctx<'_>, collector_id: &str) -> Answer {
    if let Some(a) = injected(ctx.shared, Endpoint::Config) {
        return a;
    }
    let verified = match authenticate(ctx) {
        Ok(v) => v,
        Err(a) => return a,
    };
    if collector_id.is_empty() || collector_id.contains('/') {
        return Answer::error(404, "no such collector");
    }
    if verified.collector_id != collector_id {
        return Answer::error(
            403,
            format!(
                "token is for collector {:?}, not {collector_id:?}",
                verified.collector_id
            ),
        );
    }
    let found = {
        let st = ctx.shared.lock();
        st.config_for
            .get(collector_id)
            .or(st.config.as_ref())
            .cloned()
    };
    match found {
        None => Answer::error(404, format!("no config for collector {collector_id:?}")),
        Some((version, toml)) => Answer {
            status: 200,
            body: Bytes::from(toml),
            content_type: "application/toml",
            headers: vec![("x-config-version", version.to_string())],
            error: None,
        },
    }
}

fn is_rfc3339(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| OffsetDateTime::parse(s, &Rfc3339).is_ok())
}

/// Checks an envelope against DESIGN.md's contract, which is stricter than what the real
/// backend decodes (see [`crate::contract`]): an object with non-empty strings `collector_id`,
/// `hostname`, `version`, an RFC 3339 UTC `timestamp`, an integer `metrics_count` equal to the
/// length of the array `metrics`, and every metric an object with a string `type` and an
/// RFC 3339 string `timestamp`. The real backend would take a wrong count or a local-time
/// timestamp silently, and answer 500 to a non-string `type`.
pub fn validate_envelope(envelope: &Value) -> Result<(), String> {
    let obj = envelope
        .as_object()
        .ok_or("envelope must be a JSON object")?;
    for key in ["collector_id", "hostname", "version"] {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("{key} must be a non-empty string")),
        }
    }
    let ts = obj.get("timestamp").and_then(Value::as_str);
    match ts.map(|s| OffsetDateTime::parse(s, &Rfc3339)) {
        Some(Ok(t)) if t.offset().is_utc() => {}
        Some(Ok(_)) => return Err("timestamp must be in UTC".into()),
        _ => return Err("timestamp must be an RFC 3339 string".into()),
    }
    let count = obj
        .get("metrics_count")
        .and_then(Value::as_u64)
        .ok_or("metrics_count must be a non-negative integer")?;
    let metrics = obj
        .get("metrics")
        .and_then(Value::as_array)
        .ok_or("metrics must be an array")?;
    if usize::try_from(count).ok() != Some(metrics.len()) {
        return Err(format!(
            "metrics_count {count} does not match {} metrics",
            metrics.len()
        ));
    }
    for (i, m) in metrics.iter().enumerate() {
        if !m.is_object() {
            return Err(format!("metrics[{i}] must be an object"));
        }
        if !m.get("type").is_some_and(Value::is_string) {
            return Err(format!("metrics[{i}].type must be a string"));
        }
        if !is_rfc3339(m.get("timestamp")) {
            return Err(format!("metrics[{i}].timestamp must be an RFC 3339 string"));
        }
    }
    Ok(())
}

async fn push(ctx: &Ctx<'_>, body: Incoming) -> Answer {
    let shared = ctx.shared;
    let checks = shared.config.contract_checks;
    if let Some(a) = injected(shared, Endpoint::Push) {
        return a;
    }
    let delay = shared.lock().push_delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let verified = match authenticate(ctx) {
        Ok(v) => v,
        Err(a) => return a,
    };
    let content_type = header_str(&ctx.headers, "content-type").unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if checks && !mime.eq_ignore_ascii_case("application/json") {
        return Answer::error(
            400,
            format!("Content-Type must be application/json, got {content_type:?}"),
        );
    }
    let gzipped = match header_str(&ctx.headers, "content-encoding").map(str::trim) {
        None | Some("") => false,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(e) if checks => {
            return Answer::error(400, format!("unsupported Content-Encoding {e:?}"));
        }
        Some(_) => false,
    };
    let max = shared.config.max_body_bytes;
    let raw = match read_body(body, max).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let body_bytes = raw.len();
    // Like the real backend, a gzip body goes to the JSON decoder as it is (and fails there)
    // unless this test opted into the lenient mode.
    let json_bytes = if gzipped && shared.config.accept_gzip {
        let mut out = Vec::new();
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        match flate2::read::GzDecoder::new(&raw[..])
            .take(limit)
            .read_to_end(&mut out)
        {
            Ok(_) if out.len() > max => {
                return Answer::error(413, "decompressed body too large");
            }
            Ok(_) => Bytes::from(out),
            Err(e) => return Answer::error(400, format!("invalid gzip body: {e}")),
        }
    } else {
        raw
    };
    let request = match contract::decode_push(&json_bytes) {
        Ok(request) => request,
        Err(e) => return Answer::go_error(400, "Invalid metrics data", &e.to_string()),
    };
    if request.collector_id != verified.collector_id {
        return Answer::go_error(401, "Collector ID mismatch", "");
    }
    if checks && let Err(e) = validate_envelope(&request.envelope) {
        return Answer::error(400, format!("invalid envelope: {e}"));
    }
    // Run test predicates without holding the lock.
    let predicates = shared.lock().reject.clone();
    if predicates.iter().any(|p| p(&request.envelope)) {
        return Answer::error(400, "batch rejected by test predicate");
    }
    let outcome = contract::process_items(&request);
    let mut st = shared.lock();
    let stored_rows = outcome.stored.len();
    let recorded = st.records_push(&shared.config);
    if recorded {
        st.query_stats.extend(outcome.stored);
    }
    if let Some(index) = outcome.panicked_at {
        return Answer::error(
            500,
            format!(
                "handler panicked: `type` of metrics[{index}] is not a string (the real \
                 backend's unchecked type assertion; gin's recovery answers 500)"
            ),
        );
    }
    let answer = Answer::json(
        shared.config.push_success_status,
        &json!({
            "status": "success",
            "collector_id": request.collector_id,
            "metrics_inserted": stored_rows,
            "bytes_received": body_bytes,
            "processing_time_ms": 0,
            "next_config_version": 1,
            "next_check_in_seconds": 300,
        }),
    );
    if !recorded {
        st.pushes_not_recorded += 1;
        return answer;
    }
    st.batches.push(RecordedBatch {
        envelope: request.envelope,
        gzipped,
        client_cn: ctx.client_cn.clone(),
        token_collector_id: verified.collector_id,
        body_bytes,
        headers: ctx.header_list.clone(),
        received_at: ctx.at,
        stored_rows,
        dropped_items: outcome.dropped,
    });
    answer
}
