//! TLS to PostgreSQL with rustls, negotiated by the runtime itself, with libpq's `sslmode`
//! semantics (see [`SslMode`]).
//!
//! The runtime sends the SSLRequest and reads the server's one-byte answer itself, then runs the
//! TLS handshake, and only then hands the (encrypted) stream to tokio-postgres, which is told
//! there is no TLS to do. This keeps the per-message cap of [`super::wire`] above TLS, on the
//! plaintext protocol. Exactly one byte is read before the handshake, so nothing the server (or a
//! man in the middle) sends in clear before it can be mistaken for protected data.
//!
//! Certificate files are read at each new connection, off the async workers, so a renewed
//! certificate is used without a reload. This module must never fall back to plaintext except
//! for `prefer` when the server answers that it does not do TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::settings::{PostgresConfig, SslMode};

/// The SSLRequest message: length 8, then the request code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Why TLS could not be set up; each names the setting or the step at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the server does not accept TLS connections (`sslmode = \"{0}\"` requires TLS)")]
    Refused(SslMode),
    #[error("the server answered the TLS request with byte {0:#04x}, not `S` or `N`")]
    BadAnswer(u8),
    /// `key` is the whole dotted key: `postgres.sslrootcert`, `postgres.servers.NAME.sslkey`.
    #[error("cannot read `{key}` `{path}`: {detail}")]
    File {
        key: String,
        path: String,
        detail: String,
    },
    #[error("`{key}` `{path}` holds no PEM certificate")]
    NoCertificate { key: String, path: String },
    #[error("`{0}` is not a valid TLS server name for `host`")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Config(String),
    #[error("TLS handshake with the server failed (`sslmode = \"{mode}\"`): {detail}")]
    Handshake { mode: SslMode, detail: String },
    #[error("negotiating TLS: {0}")]
    Io(std::io::Error),
}

/// Either the plain stream (the server said no to `prefer`) or the TLS session over it.
pub enum Negotiated<S> {
    Plain(S),
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

/// Asks the server for TLS and sets it up as `settings.sslmode` requires. `Disable` and unix
/// sockets never get here.
pub async fn negotiate<S>(
    mut stream: S,
    settings: &PostgresConfig,
) -> Result<Negotiated<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mode = settings.sslmode;
    let config = client_config(settings).await?;
    let name = ServerName::try_from(settings.host.clone())
        .map_err(|_| TlsError::ServerName(settings.host.clone()))?;
    stream.write_all(&SSL_REQUEST).await.map_err(TlsError::Io)?;
    stream.flush().await.map_err(TlsError::Io)?;
    match stream.read_u8().await.map_err(TlsError::Io)? {
        b'S' => {}
        b'N' if mode == SslMode::Prefer => return Ok(Negotiated::Plain(stream)),
        b'N' => return Err(TlsError::Refused(mode)),
        other => return Err(TlsError::BadAnswer(other)),
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let session = connector
        .connect(name, stream)
        .await
        .map_err(|e| TlsError::Handshake {
            mode,
            detail: e.to_string(),
        })?;
    Ok(Negotiated::Tls(Box::new(session)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration of `settings`, its files read off the async workers.
async fn client_config(settings: &PostgresConfig) -> Result<rustls::ClientConfig, TlsError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || build_config(&settings))
        .await
        .map_err(|e| TlsError::Config(format!("reading the TLS files: {e}")))?
}

fn build_config(settings: &PostgresConfig) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = settings.sslrootcert.as_deref().ok_or_else(|| {
                TlsError::Config(format!(
                    "sslmode `{}` needs `sslrootcert`",
                    settings.sslmode
                ))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(settings, "sslrootcert", path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    key: settings.key("sslrootcert"),
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            if settings.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        }
        _ => Arc::new(Unverified(provider.signature_verification_algorithms)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&settings.sslcert, &settings.sslkey) {
        (Some(cert), Some(key)) => {
            let chain = certificates(settings, "sslcert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                key: settings.key("sslkey"),
                path: key.display().to_string(),
                detail: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Config(format!("`sslcert`/`sslkey`: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn certificates(
    settings: &PostgresConfig,
    key: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |detail: String| TlsError::File {
        key: settings.key(key),
        path: path.display().to_string(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key: settings.key(key),
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// `verify-ca`: the chain must lead to `sslrootcert`, whatever name the certificate carries.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encryption without authentication of the
/// server, as libpq. The handshake signatures are still checked against the presented key.
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file problem names the key as written, in the server's own table.
    #[test]
    fn file_errors_name_the_key_of_the_server_they_belong_to() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (section, root, expected) in [
            (
                "postgres",
                tmp.path().join("missing.pem"),
                "cannot read `postgres.sslrootcert`",
            ),
            (
                "postgres.servers.replica",
                tmp.path().join("missing.pem"),
                "cannot read `postgres.servers.replica.sslrootcert`",
            ),
            (
                "postgres.servers.replica",
                empty.clone(),
                "`postgres.servers.replica.sslrootcert`",
            ),
        ] {
            let mut settings = PostgresConfig::unreachable_for_tests();
            settings.section = section.to_owned();
            settings.sslmode = SslMode::VerifyFull;
            settings.sslrootcert = Some(root);
            let error = build_config(&settings).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
