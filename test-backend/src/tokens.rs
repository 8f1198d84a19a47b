//! HS256 access tokens: issuing and verifying, with the claims of the backend contract.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

/// Seconds since the Unix epoch (0 for a clock before 1970).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Whole seconds of a lifetime, rounded up (a 1.5 s lifetime gives `exp = iat + 2`).
pub(crate) fn ceil_secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// Signs arbitrary claims as an HS256 JWT with `secret`, exactly as the backend (or an agent in
/// shared-secret mode) would.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    // Serializing a `serde_json::Value` and HMAC-signing cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

/// The standard claims of an access token: `collector_id, hostname, type:"access", exp, iat,
/// nbf, sub:"collector:<id>"`, plus `jti` when given.
pub fn access_claims(
    collector_id: &str,
    hostname: &str,
    iat: i64,
    exp: i64,
    jti: Option<&str>,
) -> Value {
    let mut claims = json!({
        "collector_id": collector_id,
        "hostname": hostname,
        "type": "access",
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "sub": format!("collector:{collector_id}"),
    });
    if let (Some(jti), Some(obj)) = (jti, claims.as_object_mut()) {
        obj.insert("jti".into(), Value::String(jti.to_string()));
    }
    claims
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub collector_id: String,
    pub hostname: String,
    pub iat: Option<i64>,
    pub jti: Option<String>,
}

/// Checks signature, `exp` (required, the token is expired from second `exp` on), `nbf`, and with
/// `strict` also `type == "access"`, `sub == "collector:<collector_id>"` and an integer `iat`.
/// Revocation and known-collector checks are done by the caller.
pub(crate) fn verify(
    secret: &[u8],
    token: &str,
    strict: bool,
    now: SystemTime,
) -> Result<VerifiedToken, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|e| format!("invalid token: {e}"))?;
    let claims = data.claims;
    let now = unix_secs(now);

    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("invalid token: missing or non-integer exp claim")?;
    if now >= exp {
        return Err(format!("token expired (exp {exp}, now {now})"));
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or("invalid token: non-integer nbf claim")?;
        if nbf > now {
            return Err(format!("token not yet valid (nbf {nbf}, now {now})"));
        }
    }
    let collector_id = claims
        .get("collector_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("invalid token: missing collector_id claim")?
        .to_string();
    let iat = claims.get("iat").and_then(Value::as_i64);
    if strict {
        if claims.get("type").and_then(Value::as_str) != Some("access") {
            return Err("invalid token: type claim must be \"access\"".into());
        }
        let want_sub = format!("collector:{collector_id}");
        if claims.get("sub").and_then(Value::as_str) != Some(want_sub.as_str()) {
            return Err(format!("invalid token: sub claim must be {want_sub:?}"));
        }
        if iat.is_none() {
            return Err("invalid token: missing or non-integer iat claim".into());
        }
    }
    Ok(VerifiedToken {
        collector_id,
        hostname: claims
            .get("hostname")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        iat,
        jti: claims
            .get("jti")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let now = SystemTime::now();
        let t = unix_secs(now);
        let good = sign_hs256(b"k", &access_claims("c1", "h", t, t + 10, Some("j")));
        let v = verify(b"k", &good, true, now).expect("valid");
        assert_eq!(v.collector_id, "c1");
        assert_eq!(v.jti.as_deref(), Some("j"));
        assert!(verify(b"other", &good, true, now).is_err());
        assert!(verify(b"k", "garbage", true, now).is_err());
        let expired = sign_hs256(b"k", &access_claims("c1", "h", t - 10, t, None));
        assert!(
            verify(b"k", &expired, true, now)
                .unwrap_err()
                .contains("expired")
        );
        let mut claims = access_claims("c1", "h", t, t + 10, None);
        claims["type"] = json!("refresh");
        let wrong_type = sign_hs256(b"k", &claims);
        assert!(verify(b"k", &wrong_type, true, now).is_err());
        assert!(verify(b"k", &wrong_type, false, now).is_ok());
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
