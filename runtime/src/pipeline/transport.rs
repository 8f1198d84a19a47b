//! The HTTPS client to the backend: rustls only, TLS 1.3 minimum unless the operator allows 1.2,
//! the operator's CA instead of the system roots when one is given, and a client certificate for
//! mTLS (from `[tls]`, else the one the backend issued at registration).

use std::time::Duration;

use crate::config::TlsConfig;

/// Threat: a backend that accepts the connection and never answers would stall delivery.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` is not a usable PEM {what}: {message}")]
    Pem {
        path: String,
        what: &'static str,
        message: String,
    },
    #[error("cannot build the HTTPS client: {0}")]
    Build(String),
}

/// A client certificate and key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    /// Where it came from, for error messages.
    pub source: String,
}

/// Builds the client. `issued` is the certificate from registration, used when `[tls]` names
/// none.
pub fn build_client(
    tls: &TlsConfig,
    issued: Option<&ClientIdentity>,
) -> Result<reqwest::Client, TransportError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("pganalytics-collector/", env!("CARGO_PKG_VERSION")))
        .min_tls_version(if tls.min_tls12 {
            reqwest::tls::Version::TLS_1_2
        } else {
            reqwest::tls::Version::TLS_1_3
        });
    if tls.min_tls12 {
        tracing::warn!(
            "`tls.min_version = \"1.2\"`: TLS 1.2 is allowed to the backend; prefer 1.3"
        );
    }
    if let Some(ca) = &tls.ca_file {
        let path = ca.display().to_string();
        let pem = std::fs::read(ca).map_err(|source| TransportError::Read {
            path: path.clone(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TransportError::Pem {
                path: path.clone(),
                what: "CA bundle",
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TransportError::Pem {
                path,
                what: "CA bundle",
                message: "no certificate in it".into(),
            });
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if !tls.verify {
        tracing::warn!(
            "`tls.verify = false`: the backend's certificate is NOT verified; anyone on the path can read and \
             alter what this agent sends. Use only in a lab."
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientIdentity {
            cert_pem: std::fs::read_to_string(cert).map_err(|source| TransportError::Read {
                path: cert.display().to_string(),
                source,
            })?,
            key_pem: std::fs::read_to_string(key).map_err(|source| TransportError::Read {
                path: key.display().to_string(),
                source,
            })?,
            source: format!("{} and {}", cert.display(), key.display()),
        }),
        _ => issued.cloned(),
    };
    if let Some(identity) = identity {
        let pem = format!("{}\n{}", identity.cert_pem.trim_end(), identity.key_pem);
        let identity =
            reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| TransportError::Pem {
                path: identity.source.clone(),
                what: "client certificate and key",
                message: e.to_string(),
            })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| TransportError::Build(e.to_string()))
}

/// A reqwest error as one line with its causes (TLS handshake details live in the sources).
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = inner.source();
    }
    text
}

/// [`describe`], plus what to check when the TLS handshake failed.
pub fn explain(error: &reqwest::Error) -> String {
    let text = describe(error);
    if is_tls(error) {
        format!("{text} ({})", tls_hint(&text))
    } else {
        text
    }
}

/// Whether the connection failed in the TLS handshake.
pub fn is_tls(error: &reqwest::Error) -> bool {
    let text = describe(error).to_ascii_lowercase();
    error.is_connect()
        && [
            "certificate",
            "tls",
            "handshake",
            "protocol version",
            "alert",
        ]
        .iter()
        .any(|word| text.contains(word))
}

/// What an operator should look at for a failed handshake.
fn tls_hint(text: &str) -> &'static str {
    if text.contains("invalid peer certificate") {
        "the backend's certificate is not trusted: check `tls.ca_file` and the URL's host name"
    } else if text.contains("ProtocolVersion") || text.contains("protocol version") {
        "no common TLS version: the backend may offer only TLS 1.2; `tls.min_version = \"1.2\"` allows it"
    } else if text.contains("CertificateRequired") || text.contains("certificate required") {
        "the backend requires a client certificate: set `tls.cert_file` and `tls.key_file`, or register"
    } else {
        "TLS handshake failed"
    }
}
