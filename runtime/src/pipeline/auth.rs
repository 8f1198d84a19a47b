//! Who the agent is to the backend, and the Bearer token that proves it.
//!
//! Two modes (`[backend]`):
//! - registration (`registration_secret_file`): `POST /api/v1/collectors/register` once, then
//!   keep the identity (collector id, token, issued client certificate and key) in
//!   `STATE_DIR/identity/` with mode 0600, refresh the token before it expires, and re-register
//!   only when refreshing fails. An identity saved by `pganalytics register` is used as is.
//! - shared secret (`jwt_secret_file`): sign HS256 tokens locally for `[collector] id`.
//!
//! Secrets and tokens never appear in logs or error messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::transport::{ClientIdentity, explain};
use crate::config::BackendConfig;
use crate::fsutil;

/// Tokens are refreshed when less than this is left (or a third of their lifetime, if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Lifetime of locally signed tokens.
const LOCAL_TOKEN_LIFETIME: Duration = Duration::from_secs(1800);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no backend identity: set `backend.registration_secret_file` or `backend.jwt_secret_file`, or run `pganalytics register`"
    )]
    NoIdentity,
    #[error("cannot read `{path}`: {source}")]
    ReadSecret {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot save the identity in `{path}`: {source}")]
    Save {
        path: String,
        source: std::io::Error,
    },
    #[error("registration failed: {0}")]
    Register(String),
    #[error("token refresh failed: {0}")]
    Refresh(String),
    #[error("cannot sign a token: {0}")]
    Sign(String),
}

/// The saved identity (`identity.json`, format version 1).
#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    pub version: u32,
    pub collector_id: String,
    pub token: String,
    /// Expiry of `token`, seconds since the epoch.
    pub expires_at: Option<u64>,
    pub certificate: Option<String>,
    pub private_key: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("collector_id", &self.collector_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn client_identity(&self) -> Option<ClientIdentity> {
        Some(ClientIdentity {
            cert_pem: self.certificate.clone()?,
            key_pem: self.private_key.clone()?,
            source: "the certificate issued at registration".into(),
        })
    }
}

pub struct Auth {
    backend: BackendConfig,
    hostname: String,
    configured_id: String,
    dir: Option<PathBuf>,
    identity: Option<Identity>,
}

#[derive(Deserialize)]
struct RegisterResponse {
    collector_id: String,
    token: String,
    certificate: Option<String>,
    private_key: Option<String>,
}

#[derive(Deserialize)]
struct RefreshResponse {
    token: String,
}

impl Auth {
    /// `dir` is `STATE_DIR/identity`; without it nothing is persisted.
    pub fn new(
        backend: BackendConfig,
        configured_id: String,
        hostname: String,
        dir: Option<PathBuf>,
    ) -> Self {
        let identity = dir.as_deref().and_then(load_identity);
        Self {
            backend,
            hostname,
            configured_id,
            dir,
            identity,
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The collector id and a token valid for a while, registering or refreshing as needed.
    pub async fn bearer(
        &mut self,
        client: &reqwest::Client,
    ) -> Result<(String, String), AuthError> {
        if let Some(secret_file) = &self.backend.jwt_secret_file {
            let secret = read_secret(secret_file)?;
            let token = sign_local(
                &self.configured_id,
                &self.hostname,
                secret.as_bytes(),
                LOCAL_TOKEN_LIFETIME,
            )?;
            return Ok((self.configured_id.clone(), token));
        }
        match &self.identity {
            None => {
                self.register(client).await?;
            }
            Some(identity) if needs_refresh(identity) => {
                if let Err(e) = self.refresh(client).await {
                    tracing::warn!("{e}; registering again");
                    self.register(client).await?;
                }
            }
            Some(_) => {}
        }
        let identity = self.identity.as_ref().ok_or(AuthError::NoIdentity)?;
        Ok((identity.collector_id.clone(), identity.token.clone()))
    }

    /// After a 401: refresh, else re-register. Returns whether there is a new token to try.
    pub async fn recover(&mut self, client: &reqwest::Client) -> Result<(), AuthError> {
        if self.backend.jwt_secret_file.is_some() {
            return Err(AuthError::Refresh(
                "the backend refused a locally signed token (check the shared secret)".into(),
            ));
        }
        if self.identity.is_some() && self.refresh(client).await.is_ok() {
            return Ok(());
        }
        self.register(client).await
    }

    pub async fn register(&mut self, client: &reqwest::Client) -> Result<(), AuthError> {
        let Some(secret_file) = &self.backend.registration_secret_file else {
            return Err(if self.identity.is_some() {
                AuthError::Register("the token is no longer accepted and no `backend.registration_secret_file` is set to register again".into())
            } else {
                AuthError::NoIdentity
            });
        };
        let secret = read_secret(secret_file)?;
        let body = serde_json::json!({
            "name": self.configured_id,
            "hostname": self.hostname,
            "version": crate::VERSION,
        });
        let response = client
            .post(format!("{}/api/v1/collectors/register", self.backend.url))
            .header("X-Registration-Secret", secret.trim())
            .json(&body)
            .send()
            .await
            .map_err(|e| AuthError::Register(explain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(AuthError::Register(format!(
                "the backend answered {status}: {}",
                text.trim()
            )));
        }
        let registered: RegisterResponse = response
            .json()
            .await
            .map_err(|e| AuthError::Register(format!("unreadable answer: {e}")))?;
        let identity = Identity {
            version: 1,
            collector_id: registered.collector_id,
            expires_at: token_expiry(&registered.token),
            token: registered.token,
            certificate: registered.certificate.filter(|c| !c.is_empty()),
            private_key: registered.private_key.filter(|k| !k.is_empty()),
        };
        tracing::info!(collector_id = %identity.collector_id, "registered with the backend");
        self.save(identity)
    }

    async fn refresh(&mut self, client: &reqwest::Client) -> Result<(), AuthError> {
        let Some(current) = self.identity.clone() else {
            return Err(AuthError::NoIdentity);
        };
        let response = client
            .post(format!(
                "{}/api/v1/collectors/refresh-token",
                self.backend.url
            ))
            .bearer_auth(&current.token)
            .send()
            .await
            .map_err(|e| AuthError::Refresh(explain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AuthError::Refresh(format!("the backend answered {status}")));
        }
        let refreshed: RefreshResponse = response
            .json()
            .await
            .map_err(|e| AuthError::Refresh(format!("unreadable answer: {e}")))?;
        tracing::info!("refreshed the backend token");
        self.save(Identity {
            expires_at: token_expiry(&refreshed.token),
            token: refreshed.token,
            ..current
        })
    }

    fn save(&mut self, identity: Identity) -> Result<(), AuthError> {
        if let Some(dir) = &self.dir {
            save_identity(dir, &identity)?;
        }
        self.identity = Some(identity);
        Ok(())
    }
}

fn read_secret(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|source| AuthError::ReadSecret {
            path: path.display().to_string(),
            source,
        })
}

fn load_identity(dir: &Path) -> Option<Identity> {
    let path = dir.join("identity.json");
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<Identity>(&text) {
        Ok(identity) if identity.version == 1 => Some(identity),
        Ok(_) | Err(_) => {
            tracing::warn!(file = %path.display(), "ignoring an unreadable saved identity");
            None
        }
    }
}

/// Replaces the identity atomically with mode 0600, so tokens and keys are readable by the
/// agent's user only.
pub fn save_identity(dir: &Path, identity: &Identity) -> Result<(), AuthError> {
    let path = dir.join("identity.json");
    let error = |source| AuthError::Save {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(error)?;
    let json = serde_json::to_vec_pretty(identity).map_err(|e| error(std::io::Error::other(e)))?;
    fsutil::write_atomically(&path, &json, fsutil::PRIVATE).map_err(error)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn needs_refresh(identity: &Identity) -> bool {
    let Some(expires_at) = identity.expires_at else {
        return false;
    };
    let issued_at = jwt_claim(&identity.token, "iat").unwrap_or(expires_at.saturating_sub(1800));
    refresh_due(expires_at, issued_at, now())
}

/// Whether a token issued at `issued_at` and expiring at `expires_at` should be refreshed at
/// `now`: within five minutes of expiry, or a third of its lifetime for short-lived tokens.
fn refresh_due(expires_at: u64, issued_at: u64, now: u64) -> bool {
    let margin = REFRESH_MARGIN
        .as_secs()
        .min(expires_at.saturating_sub(issued_at) / 3);
    now + margin >= expires_at
}

/// The `exp` claim of a JWT, read without verifying it (the agent does not hold the backend's
/// key; it only needs to know when to refresh).
pub fn token_expiry(token: &str) -> Option<u64> {
    jwt_claim(token, "exp")
}

fn jwt_claim(token: &str, claim: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(claim)?.as_u64()
}

/// Signs an HS256 token with the claims the backend expects.
pub fn sign_local(
    collector_id: &str,
    hostname: &str,
    secret: &[u8],
    lifetime: Duration,
) -> Result<String, AuthError> {
    let now = now();
    let claims = serde_json::json!({
        "collector_id": collector_id,
        "hostname": hostname,
        "type": "access",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "sub": format!("collector:{collector_id}"),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_tokens_carry_the_contract_claims_and_their_expiry_is_readable() {
        let token = sign_local("c1", "db1", b"secret", Duration::from_secs(600)).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"secret"),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims["collector_id"], "c1");
        assert_eq!(decoded.claims["type"], "access");
        assert_eq!(decoded.claims["sub"], "collector:c1");
        let exp = token_expiry(&token).unwrap();
        assert!(exp > now() + 500 && exp <= now() + 600);
    }

    #[test]
    fn tokens_are_refreshed_before_they_expire() {
        // 30-minute token: refreshed in its last five minutes.
        assert!(!refresh_due(1800, 0, 1400));
        assert!(refresh_due(1800, 0, 1500));
        // 30-second token: refreshed in its last third.
        assert!(!refresh_due(30, 0, 19));
        assert!(refresh_due(30, 0, 20));
        assert!(refresh_due(30, 0, 100), "expired tokens too");
        let fresh = sign_local("c", "h", b"s", Duration::from_secs(1800)).unwrap();
        let identity = Identity {
            version: 1,
            collector_id: "c".into(),
            expires_at: token_expiry(&fresh),
            token: fresh,
            certificate: None,
            private_key: None,
        };
        assert!(!needs_refresh(&identity));
    }

    #[test]
    fn identities_are_saved_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            version: 1,
            collector_id: "c".into(),
            token: "t".into(),
            expires_at: None,
            certificate: None,
            private_key: Some("KEY".into()),
        };
        save_identity(dir.path(), &identity).unwrap();
        let mode = std::fs::metadata(dir.path().join("identity.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_identity(dir.path()).unwrap().collector_id, "c");
        assert!(
            !format!("{identity:?}").contains("KEY"),
            "Debug never prints secrets"
        );
    }
}
