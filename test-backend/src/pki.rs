//! Certificates of the test backend: a server CA, a separate client CA, the server's leaf
//! certificate and client certificates issued on demand.
//!
//! Two CAs are used on purpose: the one the agent must trust ([`Pki::ca_pem`]) only signs the
//! server certificate, and the one the server trusts for mTLS ([`Pki::client_ca_pem`]) only
//! signs client certificates, so a test can never pass by accidentally presenting the server's
//! certificate as a client identity (or the other way round).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// The certificate material of a [`crate::TestBackend`].
///
/// Cheap to clone (shared behind an `Arc`). Pass a clone in [`crate::BackendConfig::pki`] to
/// start a *new* backend that the agent still trusts (same CAs, same server certificate).
#[derive(Clone)]
pub struct Pki {
    inner: Arc<PkiInner>,
}

struct PkiInner {
    server_ca: CertifiedIssuer<'static, KeyPair>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
    server_cert_der: CertificateDer<'static>,
    server_cert_pem: String,
    server_key_der: Vec<u8>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn ca_params(cn: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "pgAnalytics test backend");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

impl Pki {
    /// Generates fresh CAs and a server certificate valid for DNS `localhost`, IP `127.0.0.1`
    /// and IP `::1` (ECDSA P-256 keys, valid from yesterday for ten years).
    pub fn generate() -> Result<Pki, rcgen::Error> {
        let server_ca = CertifiedIssuer::self_signed(
            ca_params("pgAnalytics test server CA")?,
            KeyPair::generate()?,
        )?;
        let client_ca = CertifiedIssuer::self_signed(
            ca_params("pgAnalytics test client CA")?,
            KeyPair::generate()?,
        )?;

        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &server_ca)?;

        Ok(Pki {
            inner: Arc::new(PkiInner {
                server_ca,
                client_ca,
                server_cert_pem: cert.pem(),
                server_cert_der: cert.der().clone(),
                server_key_der: key.serialize_der(),
            }),
        })
    }

    /// PEM of the CA that signed the server certificate: what the agent's `tls.ca_file` must
    /// contain.
    pub fn ca_pem(&self) -> String {
        self.inner.server_ca.pem()
    }

    /// PEM of the CA the server trusts for client certificates (mTLS).
    pub fn client_ca_pem(&self) -> String {
        self.inner.client_ca.pem()
    }

    /// PEM of the server's leaf certificate.
    pub fn server_cert_pem(&self) -> String {
        self.inner.server_cert_pem.clone()
    }

    /// A client certificate with subject CN `cn`, signed by the client CA, valid from yesterday
    /// for one year. Returns `(certificate PEM, PKCS#8 private key PEM)`.
    pub fn client_cert_for(&self, cn: &str) -> (String, String) {
        let now = SystemTime::now();
        self.client_cert_with_validity(
            cn,
            now - Duration::from_secs(86_400),
            now + Duration::from_secs(365 * 86_400),
        )
    }

    /// Like [`Pki::client_cert_for`] with an explicit validity window (e.g. an already expired
    /// certificate for negative tests).
    ///
    /// # Panics
    /// If rcgen cannot build the certificate (only for invalid input such as a window before
    /// 1950): this is a test-setup failure, not request data.
    pub fn client_cert_with_validity(
        &self,
        cn: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (String, String) {
        self.try_client_cert(cn, not_before, not_after)
            .unwrap_or_else(|e| panic!("test-backend: cannot issue a client certificate: {e}"))
    }

    pub(crate) fn try_client_cert(
        &self,
        cn: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(String, String), rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "pgAnalytics collectors");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = OffsetDateTime::from(not_before);
        params.not_after = OffsetDateTime::from(not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.inner.client_ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    pub(crate) fn server_cert_der(&self) -> CertificateDer<'static> {
        self.inner.server_cert_der.clone()
    }

    pub(crate) fn server_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.inner.server_key_der.clone()))
    }

    pub(crate) fn client_ca_der(&self) -> CertificateDer<'static> {
        self.inner.client_ca.der().clone()
    }
}

/// The subject common name of a DER certificate.
///
/// A deliberately tiny scan instead of a full X.509 parser: it returns the value of the *last*
/// `commonName` attribute (OID 2.5.4.3) in the encoding. In a TBSCertificate the issuer name
/// comes before the subject name, so for certificates that carry a CN in their subject (all
/// certificates this crate issues, and the only ones the client verifier accepts) that is the
/// subject's CN.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut found = None;
    let mut i = 0;
    while i + CN_OID.len() <= der.len() {
        if der[i..].starts_with(&CN_OID)
            && let Some((value, end)) = string_at(der, i + CN_OID.len())
        {
            found = Some(value);
            i = end;
            continue;
        }
        i += 1;
    }
    found
}

/// Reads a DER string (UTF8String, PrintableString, IA5String, T61String) at `pos`; returns
/// the value and the offset just past it.
fn string_at(der: &[u8], pos: usize) -> Option<(String, usize)> {
    let tag = *der.get(pos)?;
    if !matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
        return None;
    }
    let first = *der.get(pos + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, pos + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 2 {
            return None;
        }
        let mut len = 0usize;
        for k in 0..n {
            len = (len << 8) | *der.get(pos + 2 + k)? as usize;
        }
        (len, pos + 2 + n)
    };
    let bytes = der.get(start..start.checked_add(len)?)?;
    Some((String::from_utf8_lossy(bytes).into_owned(), start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_of_issued_certificates() {
        let pki = Pki::generate().expect("pki");
        let (pem, _key) = pki.client_cert_for("collector-42");
        let der = pem_to_der(&pem);
        assert_eq!(common_name(&der).as_deref(), Some("collector-42"));
        let long = "x".repeat(200);
        let (pem, _key) = pki.client_cert_for(&long);
        assert_eq!(common_name(&pem_to_der(&pem)), Some(long));
        assert_eq!(
            common_name(pki.server_cert_der().as_ref()).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            common_name(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x7f]),
            None
        );
        assert_eq!(common_name(&[]), None);
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }
}
