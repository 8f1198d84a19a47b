//! End-to-end tests of the fake backend through a real HTTPS client (reqwest, rustls + ring).

use std::io::Write;
use std::time::{Duration, SystemTime};

use reqwest::{Client, ClientBuilder, StatusCode};
use serde_json::{Value, json};
use test_backend::{
    BackendConfig, Endpoint, TestBackend, access_claims, sign_hs256, validate_envelope,
};

fn builder(b: &TestBackend) -> ClientBuilder {
    let ca = reqwest::Certificate::from_pem(b.ca_pem().as_bytes()).expect("ca pem");
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
}

fn client(b: &TestBackend) -> Client {
    builder(b).build().expect("client")
}

fn client_with_identity(b: &TestBackend, cert: &str, key: &str) -> Client {
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("id");
    builder(b).identity(identity).build().expect("client")
}

fn now_rfc3339() -> String {
    // Good enough for tests: a fixed-format UTC timestamp.
    "2026-11-02T10:00:00Z".to_string()
}

fn envelope(collector_id: &str, n: usize) -> Value {
    let metrics: Vec<Value> = (0..n)
        .map(|i| json!({"type": "pg_stats", "timestamp": now_rfc3339(), "database": format!("db{i}")}))
        .collect();
    json!({
        "collector_id": collector_id,
        "hostname": "host-1",
        "timestamp": now_rfc3339(),
        "version": "0.1.0",
        "metrics_count": n,
        "metrics": metrics,
    })
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

struct Registered {
    id: String,
    token: String,
    certificate: String,
    private_key: String,
}

async fn register(b: &TestBackend, c: &Client) -> Registered {
    let resp = c
        .post(format!("{}/api/v1/collectors/register", b.url()))
        .header("X-Registration-Secret", b.registration_secret())
        .json(&json!({"name": "agent", "hostname": "host-1", "address": "10.0.0.1", "version": "0.1.0"}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("json");
    for key in [
        "collector_id",
        "token",
        "certificate",
        "private_key",
        "expires_at",
    ] {
        assert!(v[key].is_string(), "missing {key} in {v}");
    }
    Registered {
        id: v["collector_id"].as_str().unwrap_or_default().to_string(),
        token: v["token"].as_str().unwrap_or_default().to_string(),
        certificate: v["certificate"].as_str().unwrap_or_default().to_string(),
        private_key: v["private_key"].as_str().unwrap_or_default().to_string(),
    }
}

async fn push(c: &Client, b: &TestBackend, auth: &str, body: &Value) -> (StatusCode, Value) {
    let resp = c
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("push");
    let status = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn register_then_push_plain_and_lenient_gzip_are_recorded() {
    let b = TestBackend::start(BackendConfig {
        accept_gzip: true,
        ..BackendConfig::default()
    })
    .await;
    assert!(b.url().starts_with("https://localhost:"));
    let c = client(&b);

    // Registration secret checks.
    let url = format!("{}/api/v1/collectors/register", b.url());
    let body = json!({"name": "a", "hostname": "h"});
    let r = c.post(&url).json(&body).send().await.expect("send");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(&url)
        .header("X-Registration-Secret", "wrong")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.json::<Value>().await.expect("json")["error"].is_string());
    let r = c
        .post(&url)
        .header("X-Registration-Secret", b.registration_secret())
        .json(&json!({"hostname": "h"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let reg = register(&b, &c).await;
    assert_eq!(b.registrations().len(), 1);
    assert_eq!(b.registrations()[0].address.as_deref(), Some("10.0.0.1"));

    let (status, answer) = push(&c, &b, &bearer(&reg.token), &envelope(&reg.id, 2)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["collector_id"], reg.id.as_str());
    assert_eq!(
        answer["metrics_inserted"], 0,
        "pg_stats items are not stored"
    );

    let env = envelope(&reg.id, 3);
    let r = push_gzip(&c, &b, &bearer(&reg.token), &env).await;
    assert_eq!(r.status(), StatusCode::OK);

    let batches = b.batches();
    assert_eq!(batches.len(), 2);
    assert!(!batches[0].gzipped);
    assert!(batches[1].gzipped);
    assert_eq!(batches[0].envelope["metrics_count"], 2);
    assert_eq!(batches[1].envelope, env);
    assert_eq!(batches[1].header("content-encoding"), Some("gzip"));
    assert_eq!(batches[1].token_collector_id, reg.id);
    assert_eq!(batches[0].client_cn, None);
    assert_eq!(b.metrics().len(), 5);
    assert_eq!(b.metrics_of_type("pg_stats").len(), 5);
    let reqs = b.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[5].status, 200);
    assert_eq!(reqs[5].path, "/api/v1/metrics/push");
    assert!(b.wait_for_batches(2, Duration::from_secs(1)).await.is_ok());
    assert!(
        b.wait_for_batches(3, Duration::from_millis(50))
            .await
            .is_err()
    );
}

async fn push_gzip(c: &Client, b: &TestBackend, auth: &str, body: &Value) -> reqwest::Response {
    c.post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", auth)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .expect("push")
}

/// The real backend does not decode gzip: every gzip push answers 400 with its error shape,
/// and nothing is recorded. The header alone changes nothing (a plain body is accepted).
#[tokio::test]
async fn a_gzip_body_answers_400_like_the_real_backend() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    for level in [0, 1, 9] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        enc.write_all(envelope("c1", 1).to_string().as_bytes())
            .expect("gzip");
        let r = c
            .post(format!("{}/api/v1/metrics/push", b.url()))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(enc.finish().expect("gzip"))
            .send()
            .await
            .expect("push");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "level {level}");
        let body: Value = r.json().await.expect("json error body");
        assert_eq!(body["code"], 400);
        assert_eq!(body["message"], "Invalid metrics data");
        assert!(
            body["details"]
                .as_str()
                .unwrap_or_default()
                .contains("gzip"),
            "{body}"
        );
    }
    assert!(b.batches().is_empty());

    let r = c
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(envelope("c1", 1).to_string())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(b.batches().len(), 1);
}

fn query(hash: Value) -> Value {
    json!({
        "hash": hash, "text": "SELECT count(*) FROM orders WHERE customer = $1", "calls": 5,
        "total_time": 1.25, "mean_time": 0.25, "min_time": 0.1, "max_time": 0.5,
        "stddev_time": 0.125, "rows": 5, "shared_blks_hit": 40, "shared_blks_read": 2,
        "shared_blks_dirtied": 0, "shared_blks_written": 0, "local_blks_hit": 0,
        "local_blks_read": 0, "local_blks_dirtied": 0, "local_blks_written": 0,
        "temp_blks_read": 0, "temp_blks_written": 0, "blk_read_time": 0.0,
        "blk_write_time": 0.0, "text_truncated": true
    })
}

fn with_metrics(collector_id: &str, metrics: Vec<Value>) -> Value {
    let mut env = envelope(collector_id, 0);
    env["metrics_count"] = json!(metrics.len());
    env["metrics"] = Value::Array(metrics);
    env
}

/// What the real backend stores: `pg_query_stats` rows with Go's types; an item whose `hash`
/// is a string is dropped while the push answers 200 (the loss issue 11 found).
#[tokio::test]
async fn query_stats_are_stored_or_dropped_as_the_real_backend_would() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let ts = now_rfc3339();
    let good = json!({
        "type": "pg_query_stats", "timestamp": ts, "database": "app1",
        "queries": [query(json!(-1_739_183_385_080_879_393_i64)), query(json!(42))],
        "queries_total": 2
    });
    let as_text = json!({
        "type": "pg_query_stats", "timestamp": ts, "database": "app2",
        "queries": [query(json!("3756413316754916125"))]
    });
    let other = json!({"type": "pg_stats", "timestamp": ts, "database": "app1"});
    let env = with_metrics("c1", vec![good, other, as_text]);
    let (status, answer) = push(&c, &b, &auth, &env).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["metrics_inserted"], 2);

    let rows = b.query_stats();
    let hashes: Vec<(&str, i64)> = rows.iter().map(|r| (r.database.as_str(), r.hash)).collect();
    assert_eq!(
        hashes,
        [
            (
                "app1",
                test_backend::contract::go_int64_after_float(-1_739_183_385_080_879_393)
                    .expect("in range")
            ),
            ("app1", 42)
        ]
    );
    assert_ne!(rows[0].hash, -1_739_183_385_080_879_393, "Go rounds it");
    assert_eq!(rows[1].calls, 5);
    assert_eq!(rows[1].mean_time, 0.25);
    assert_eq!(rows[1].collector_id, "c1");

    let dropped = b.dropped_items();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].0, 0, "batch index");
    assert_eq!(dropped[0].1.index, 2, "item index");
    let why = dropped[0].1.reason.to_string();
    assert!(
        why.contains("`QueryInfo.queries.hash` of type `int64`"),
        "{why}"
    );
    assert_eq!(b.batches()[0].stored_rows, 2);
}

/// With `record_pushes`, pushes past the bound are answered as before and only counted: their
/// batches and query-stat rows are not kept.
#[tokio::test]
async fn pushes_past_record_pushes_are_answered_and_counted_not_kept() {
    let b = TestBackend::start(BackendConfig {
        record_pushes: Some(2),
        ..BackendConfig::default()
    })
    .await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    for _ in 0..5 {
        let item = json!({
            "type": "pg_query_stats", "timestamp": now_rfc3339(), "database": "app1",
            "queries": [query(json!(42))], "queries_total": 1
        });
        let (status, answer) = push(&c, &b, &auth, &with_metrics("c1", vec![item])).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["metrics_inserted"], 1);
    }
    assert_eq!(b.batches().len(), 2);
    assert_eq!(b.query_stats().len(), 2);
    assert_eq!(b.pushes_not_recorded(), 3);
}

/// Envelope fields are decoded into Go types: each wrong type is a 400 in the real backend's
/// error shape, naming the Go field.
#[tokio::test]
async fn envelope_fields_of_the_wrong_go_type_answer_400() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let cases = [
        (
            "metrics_count",
            json!("1"),
            "MetricsPushRequest.metrics_count",
        ),
        ("metrics_count", json!(1.5), "number 1.5"),
        ("hostname", json!(7), "MetricsPushRequest.hostname"),
        ("version", json!(true), "MetricsPushRequest.version"),
        (
            "metrics",
            json!({"type": "x"}),
            "MetricsPushRequest.metrics",
        ),
        ("timestamp", json!("2026-11-02 10:00:00"), "RFC 3339"),
        ("collector_id", json!(""), "required"),
    ];
    for (field, value, expected) in cases {
        let mut env = envelope("c1", 1);
        env[field] = value.clone();
        let (status, body) = push(&c, &b, &auth, &env).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field} = {value}");
        assert_eq!(body["message"], "Invalid metrics data", "{field} = {value}");
        let details = body["details"].as_str().unwrap_or_default();
        assert!(details.contains(expected), "{field} = {value}: {details}");
    }
    assert!(b.batches().is_empty());
}

/// With `contract_checks` off the fake answers exactly as the real backend: what DESIGN.md
/// forbids but Go accepts goes through, and a non-string `type` is a 500.
#[tokio::test]
async fn without_contract_checks_only_the_real_decoding_applies() {
    let b = TestBackend::start(BackendConfig {
        contract_checks: false,
        ..BackendConfig::default()
    })
    .await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let mut env = envelope("c1", 2);
    env["metrics_count"] = json!(7);
    env["timestamp"] = json!("2026-11-02T12:00:00+02:00");
    env["metrics"][0]
        .as_object_mut()
        .map(|m| m.remove("timestamp"));
    let r = c
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "text/plain")
        .header("Content-Encoding", "br")
        .body(env.to_string())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), StatusCode::OK);

    let ts = now_rfc3339();
    let panicking = with_metrics(
        "c1",
        vec![
            json!({"type": "pg_query_stats", "timestamp": ts, "database": "a", "queries": [query(json!(1))]}),
            json!({"type": 5, "timestamp": ts}),
        ],
    );
    let (status, _) = push(&c, &b, &auth, &panicking).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(b.batches().len(), 1, "the 500 batch is not recorded");
    assert_eq!(b.query_stats().len(), 1, "rows before the panic are stored");

    let (status, body) = push(&c, &b, &auth, &envelope("c2", 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Collector ID mismatch");
}

#[tokio::test]
async fn bad_bearer_and_expired_tokens_get_401() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let token = b.issue_token("c1", Duration::from_secs(60));
    let env = envelope("c1", 1);

    for auth in [
        format!("bearer {token}"),
        format!("Token {token}"),
        token.clone(),
        format!("Bearer  {token}"),
        "Bearer not.a.jwt".to_string(),
    ] {
        let (status, body) = push(&c, &b, &auth, &env).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}");
        assert!(body["error"].is_string());
    }
    // No Authorization at all.
    let r = c
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Content-Type", "application/json")
        .body(env.to_string())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Wrong secret.
    let t = test_backend::unix_now();
    let forged = sign_hs256(b"other-secret", &access_claims("c1", "h", t, t + 60, None));
    assert_eq!(push(&c, &b, &bearer(&forged), &env).await.0, 401);

    // Expired.
    let expired = b.issue_expired_token("c1", Duration::from_secs(5));
    let (status, body) = push(&c, &b, &bearer(&expired), &env).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );

    // Wrong claim type (strict claims).
    let mut claims = access_claims("c1", "h", t, t + 60, None);
    claims["type"] = json!("refresh");
    assert_eq!(
        push(&c, &b, &bearer(&b.sign_claims(&claims)), &env).await.0,
        401
    );

    // Shared-secret mode: a token the agent signed itself for an unregistered id.
    let own = sign_hs256(&b.jwt_secret(), &access_claims("c1", "h", t, t + 60, None));
    assert_eq!(push(&c, &b, &bearer(&own), &env).await.0, 200);
    assert_eq!(push(&c, &b, &bearer(&token), &env).await.0, 200);
}

#[tokio::test]
async fn short_lived_token_expires_and_refresh_works() {
    let b = TestBackend::start(BackendConfig {
        token_lifetime: Duration::from_secs(2),
        ..BackendConfig::default()
    })
    .await;
    let c = client(&b);
    let reg = register(&b, &c).await;
    let refresh_url = format!("{}/api/v1/collectors/refresh-token", b.url());

    // Refresh with the valid token.
    let r = c
        .post(&refresh_url)
        .header("Authorization", bearer(&reg.token))
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("json");
    let new_token = v["token"].as_str().unwrap_or_default().to_string();
    assert!(v["expires_at"].is_string());
    assert_ne!(new_token, reg.token);
    assert_eq!(
        push(&c, &b, &bearer(&new_token), &envelope(&reg.id, 1))
            .await
            .0,
        200
    );

    // Invalid token → 401.
    let r = c
        .post(&refresh_url)
        .header("Authorization", "Bearer garbage")
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // After the lifetime, push and refresh answer 401.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, body) = push(&c, &b, &bearer(&new_token), &envelope(&reg.id, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let r = c
        .post(&refresh_url)
        .header("Authorization", bearer(&new_token))
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_batches_get_an_error_body() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let token = b.issue_token("c1", Duration::from_secs(60));
    let auth = bearer(&token);

    // collector_id mismatch: 401, as the real backend answers.
    let (status, body) = push(&c, &b, &auth, &envelope("c2", 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "Collector ID mismatch");

    // Invalid envelopes.
    let mut bad_count = envelope("c1", 2);
    bad_count["metrics_count"] = json!(3);
    let mut no_type = envelope("c1", 1);
    no_type["metrics"][0]
        .as_object_mut()
        .map(|m| m.remove("type"));
    let mut no_ts = envelope("c1", 1);
    no_ts["metrics"][0]
        .as_object_mut()
        .map(|m| m.remove("timestamp"));
    let mut bad_ts = envelope("c1", 0);
    bad_ts["timestamp"] = json!("yesterday");
    for env in [
        bad_count,
        no_type,
        no_ts,
        bad_ts,
        json!([1, 2]),
        json!(null),
    ] {
        let (status, body) = push(&c, &b, &auth, &env).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{env}");
        assert!(body["error"].is_string(), "{env}");
    }

    let url = format!("{}/api/v1/metrics/push", b.url());
    // Not JSON, invalid gzip, wrong content type, unknown encoding.
    type Case = (Vec<(&'static str, &'static str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (
            vec![("Content-Type", "application/json")],
            b"{not json".to_vec(),
        ),
        (
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            b"definitely not gzip".to_vec(),
        ),
        (
            vec![("Content-Type", "text/plain")],
            envelope("c1", 1).to_string().into_bytes(),
        ),
        (
            vec![
                ("Content-Type", "application/json"),
                ("Content-Encoding", "br"),
            ],
            envelope("c1", 1).to_string().into_bytes(),
        ),
    ];
    for (headers, body) in cases {
        let mut req = c.post(&url).header("Authorization", &auth).body(body);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("push");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{headers:?}");
        let v: Value = r.json().await.expect("json error body");
        assert!(v["error"].is_string());
    }
    assert!(b.batches().is_empty());
    assert!(validate_envelope(&envelope("x", 4)).is_ok());
}

#[tokio::test]
async fn injected_failures_then_success() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let env = envelope("c1", 1);

    b.fail_next(1, 429, Some(Duration::from_secs(7)));
    b.fail_next(2, 503, None);
    assert_eq!(b.pending_faults(Endpoint::Push), 3);

    let r = c
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(env.to_string())
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    for _ in 0..2 {
        let (status, _) = push(&c, &b, &auth, &env).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(push(&c, &b, &auth, &env).await.0, StatusCode::OK);
    assert_eq!(b.batches().len(), 1);
    let statuses: Vec<u16> = b.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![429, 503, 503, 200]);

    // Faults on another endpoint.
    b.fail_next_on(Endpoint::Register, 1, 500, None);
    let r = c
        .post(format!("{}/api/v1/collectors/register", b.url()))
        .header("X-Registration-Secret", b.registration_secret())
        .json(&json!({"name": "a", "hostname": "h"}))
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    register(&b, &c).await;
}

#[tokio::test]
async fn reject_predicate_gives_400() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    b.reject_batches_where(|env| env["metrics_count"] == 3);

    let (status, body) = push(&c, &b, &auth, &envelope("c1", 3)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "batch rejected by test predicate");
    assert_eq!(push(&c, &b, &auth, &envelope("c1", 2)).await.0, 200);
    assert_eq!(b.batches().len(), 1);

    b.clear_reject_predicates();
    assert_eq!(push(&c, &b, &auth, &envelope("c1", 3)).await.0, 200);
}

#[tokio::test]
async fn mtls_required() {
    let b = TestBackend::start(BackendConfig {
        require_client_cert: true,
        ..BackendConfig::default()
    })
    .await;
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let env = envelope("c1", 1);

    let (cert, key) = b.client_cert_for("collector-c1");
    let good = client_with_identity(&b, &cert, &key);
    assert_eq!(push(&good, &b, &auth, &env).await.0, 200);
    assert_eq!(b.batches()[0].client_cn.as_deref(), Some("collector-c1"));
    assert_eq!(b.requests()[0].client_cn.as_deref(), Some("collector-c1"));

    // Without a certificate the handshake is refused.
    let err = client(&b)
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(env.to_string())
        .send()
        .await
        .expect_err("must fail without client cert");
    eprintln!("no client cert: {err:?}");
    let failures = b
        .wait_for_tls_failures(1, Duration::from_secs(5))
        .await
        .expect("server saw the refused handshake");
    assert!(failures[0].error.contains("certificate"), "{failures:?}");

    // A certificate from another CA is refused too.
    let other = TestBackend::start(BackendConfig::default()).await;
    let (cert, key) = other.client_cert_for("intruder");
    let bad = client_with_identity(&b, &cert, &key);
    assert!(bad.get(format!("{}/health", b.url())).send().await.is_err());
    assert_eq!(b.batches().len(), 1);
}

#[tokio::test]
async fn registration_certificate_is_usable_for_mtls() {
    // Register on a backend without mTLS, then use the issued identity against a second
    // backend with the same certificates that requires client certificates.
    let open = TestBackend::start(BackendConfig::default()).await;
    let reg = register(&open, &client(&open)).await;
    let strict = TestBackend::start(BackendConfig {
        require_client_cert: true,
        pki: Some(open.pki()),
        ..BackendConfig::default()
    })
    .await;
    let c = client_with_identity(&strict, &reg.certificate, &reg.private_key);
    let (status, body) = push(&c, &strict, &bearer(&reg.token), &envelope(&reg.id, 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        strict.batches()[0].client_cn.as_deref(),
        Some(reg.id.as_str())
    );

    // Optional client certs on the open backend are recorded too.
    let c = client_with_identity(&open, &reg.certificate, &reg.private_key);
    assert_eq!(
        push(&c, &open, &bearer(&reg.token), &envelope(&reg.id, 1))
            .await
            .0,
        200
    );
    assert_eq!(
        open.batches()[0].client_cn.as_deref(),
        Some(reg.id.as_str())
    );
}

#[tokio::test]
async fn tls12_only_refuses_tls13_only_client() {
    let b = TestBackend::start(BackendConfig {
        tls12_only: true,
        ..BackendConfig::default()
    })
    .await;
    let tls13 = builder(&b)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .expect("client");
    let err = tls13
        .get(format!("{}/health", b.url()))
        .send()
        .await
        .expect_err("TLS 1.3-only client must fail");
    eprintln!("tls13 vs tls12_only: {err:?}");
    assert!(
        b.wait_for_tls_failures(1, Duration::from_secs(5))
            .await
            .is_ok()
    );

    // A client that allows TLS 1.2 works.
    let r = client(&b)
        .get(format!("{}/health", b.url()))
        .send()
        .await
        .expect("tls12");
    assert_eq!(r.status(), StatusCode::OK);

    // And the default backend speaks TLS 1.3.
    let b13 = TestBackend::start(BackendConfig::default()).await;
    let tls13 = builder(&b13)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .expect("client");
    let r = tls13
        .get(format!("{}/health", b13.url()))
        .send()
        .await
        .expect("tls13");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_on_same_port() {
    let mut b = TestBackend::start(BackendConfig::default()).await;
    let port = b.port();
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    assert_eq!(push(&c, &b, &auth, &envelope("c1", 1)).await.0, 200);

    // A connection that is open while stopping gets closed.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // Make sure the server accepted it before stopping.
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.stop().await;
    assert!(!b.is_running());
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let err = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let err = c
        .get(format!("{}/health", b.url()))
        .send()
        .await
        .expect_err("refused");
    assert!(err.is_connect(), "{err:?}");
    b.stop().await; // idempotent

    // Restart: same port, same CA, records kept.
    b.restart().await.expect("restart");
    assert_eq!(b.port(), port);
    assert_eq!(push(&c, &b, &auth, &envelope("c1", 1)).await.0, 200);
    assert_eq!(b.batches().len(), 2);
    b.stop().await;

    // A fresh backend on the same port.
    let b2 = TestBackend::start_on(port, BackendConfig::default()).await;
    assert_eq!(b2.port(), port);
    let c2 = client(&b2);
    let r = c2
        .get(format!("{}/health", b2.url()))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(b2.batches().is_empty());
}

#[tokio::test]
async fn config_endpoint() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let c = client(&b);
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let url = format!("{}/api/v1/config/c1", b.url());

    let r = c
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    b.set_config(3, "[collectors]\ninterval = \"10s\"\n");
    let r = c
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("x-config-version")
            .and_then(|v| v.to_str().ok()),
        Some("3")
    );
    assert_eq!(
        r.text().await.expect("text"),
        "[collectors]\ninterval = \"10s\"\n"
    );

    b.set_config_for("c1", 4, "x = 1\n");
    let r = c
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(
        r.headers()
            .get("x-config-version")
            .and_then(|v| v.to_str().ok()),
        Some("4")
    );

    let r = c
        .get(&url)
        .header("Authorization", "Bearer nope")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(&url).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{}/api/v1/config/c2", b.url()))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    b.clear_config();
    let r = c
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revocation_and_unregistered_collectors() {
    let b = TestBackend::start(BackendConfig {
        accept_unregistered: false,
        ..BackendConfig::default()
    })
    .await;
    let c = client(&b);
    // Unknown collector id → 401.
    let stranger = bearer(&b.issue_token("stranger", Duration::from_secs(60)));
    assert_eq!(
        push(&c, &b, &stranger, &envelope("stranger", 1)).await.0,
        401
    );

    let reg = register(&b, &c).await;
    let auth = bearer(&reg.token);
    assert_eq!(push(&c, &b, &auth, &envelope(&reg.id, 1)).await.0, 200);

    b.revoke_tokens_issued_before(SystemTime::now());
    let (status, body) = push(&c, &b, &auth, &envelope(&reg.id, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "token revoked");
    let r = c
        .post(format!("{}/api/v1/collectors/refresh-token", b.url()))
        .header("Authorization", &auth)
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Re-registering gives a token issued after the revocation (same second is fine).
    let reg2 = register(&b, &c).await;
    assert_ne!(reg2.id, reg.id);
    assert_eq!(
        push(&c, &b, &bearer(&reg2.token), &envelope(&reg2.id, 1))
            .await
            .0,
        200
    );
    assert_eq!(b.registrations().len(), 2);
}

#[tokio::test]
async fn bad_requests_do_not_panic() {
    let b = TestBackend::start(BackendConfig {
        max_body_bytes: 1024,
        accept_gzip: true,
        ..BackendConfig::default()
    })
    .await;
    let c = builder(&b).http1_only().build().expect("client");
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    let url = format!("{}/api/v1/metrics/push", b.url());

    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.expect("send");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body)
    };

    // Too large, raw and after gunzip (a small gzip bomb).
    let (s, _) = send(
        c.post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(vec![b' '; 4096]),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, _) = send(
        c.post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(gzip(&vec![b' '; 1 << 20])),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Unknown route, wrong method, non-UTF-8 header values, empty bodies.
    let (s, body) = send(c.get(format!("{}/nope", b.url()))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    assert_eq!(send(c.get(&url)).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let weird = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("hv");
    assert_eq!(
        send(c.post(&url).header("Authorization", weird)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            c.post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            c.post(format!("{}/api/v1/collectors/register", b.url()))
                .header("X-Registration-Secret", b.registration_secret())
                .body("[]")
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(
            c.get(format!("{}/api/v1/config/", b.url()))
                .header("Authorization", &auth)
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // The server is still fine.
    assert_eq!(
        send(c.get(format!("{}/health", b.url()))).await.0,
        StatusCode::OK
    );
    assert!(b.requests().iter().all(|r| r.http_version == "HTTP/1.1"));
}

#[tokio::test]
async fn http2_and_ip_url() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let r = client(&b)
        .get(format!("{}/health", b.ip_url()))
        .send()
        .await
        .expect("health via 127.0.0.1");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(b.requests()[0].http_version, "HTTP/2.0");
}

#[tokio::test]
async fn push_delay_and_wait_helpers() {
    let b = TestBackend::start(BackendConfig::default()).await;
    let auth = bearer(&b.issue_token("c1", Duration::from_secs(60)));
    b.set_push_delay(Some(Duration::from_millis(600)));
    let impatient = builder(&b)
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let err = impatient
        .post(format!("{}/api/v1/metrics/push", b.url()))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .body(envelope("c1", 1).to_string())
        .send()
        .await
        .expect_err("timeout");
    assert!(err.is_timeout(), "{err:?}");
    b.set_push_delay(None);

    let c = client(&b);
    let (s, _) = push(&c, &b, &auth, &envelope("c1", 1)).await;
    assert_eq!(s, StatusCode::OK);
    let found = b
        .wait_for_request(|r| r.status == 200, Duration::from_secs(2))
        .await;
    assert!(found.is_some());
}
