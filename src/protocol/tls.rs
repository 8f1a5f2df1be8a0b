//! The TLS client settings every connection shares, built once into a rustls
//! `ClientConfig` (pure Rust, the ring provider: the same one rskafka's TLS
//! uses, so our connections and rskafka's get one and the same config).
//!
//! What Kafka users expect, and what this enforces:
//! - the system trust store unless a PEM CA file is given (`ssl.ca.location`);
//! - a client certificate and key for mutual TLS, PEM: PKCS#8, PKCS#1 (RSA)
//!   or SEC1 (EC) keys, and encrypted PKCS#8 with `ssl.key.password`;
//! - hostname verification on, unless switched off explicitly (Java's empty
//!   `ssl.endpoint.identification.algorithm`). Switching it off still checks
//!   the chain against the trust store: only the name check goes.
//!
//! Every error here is one line naming the file and what to do; none
//! contains key material or the key password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::secret::Secret;

/// Where the TLS material comes from and how strictly the broker is checked.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// PEM file of the CA certificate(s) to trust; `None` = the system store
    /// (which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
    pub ca_location: Option<PathBuf>,
    /// PEM file of the client certificate chain, for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    /// PEM file of the client's private key (may be the certificate file).
    pub key_location: Option<PathBuf>,
    /// Password of an encrypted PKCS#8 key.
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host we connect to.
    pub verify_hostname: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            ca_location: None,
            certificate_location: None,
            key_location: None,
            key_password: None,
            verify_hostname: true,
        }
    }
}

impl TlsSettings {
    /// Builds the rustls client configuration, reading every file now so a
    /// bad path or key fails at start-up, not at the first connection.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots()?);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("cannot use the trusted CA certificates: {e}"))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(BrokerVerifier {
                inner: verifier,
                verify_hostname: self.verify_hostname,
            }));
        let config = match (&self.certificate_location, &self.key_location) {
            (None, None) => builder.with_no_client_auth(),
            (None, Some(_)) => {
                return Err(
                    "ssl.key.location is set without ssl.certificate.location: mutual TLS needs both"
                        .into(),
                );
            }
            (Some(cert_path), key_path) => {
                let certs = read_certificates(cert_path, "ssl.certificate.location")?;
                let key_path = key_path.as_ref().unwrap_or(cert_path);
                let key = read_private_key(key_path, self.key_password.as_ref())?;
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    format!(
                        "the client certificate {} and key {} do not work together: {e}",
                        cert_path.display(),
                        key_path.display()
                    )
                })?
            }
        };
        Ok(Arc::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca_location {
            Some(path) => {
                for cert in read_certificates(path, "ssl.ca.location")? {
                    roots.add(cert).map_err(|e| {
                        format!("{} holds a certificate rustls rejects: {e}", path.display())
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err("no CA certificates found in the system trust store: install ca-certificates, set SSL_CERT_FILE, or set ssl.ca.location to the cluster's CA (PEM)".into());
                }
            }
        }
        Ok(roots)
    }
}

/// Reads every certificate of a PEM file; a JKS or PKCS#12 store, or a file
/// without certificates, gets a line saying how to convert it.
fn read_certificates(path: &Path, property: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, property)?;
    if let Some(kind) = binary_store_kind(&bytes) {
        return Err(convert_store_hint(path, property, kind));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} ({property}) is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} ({property}) holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file, decrypting an encrypted
/// PKCS#8 key with `password`.
fn read_private_key(
    path: &Path,
    password: Option<&Secret>,
) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_file(path, "ssl.key.location")?;
    if let Some(kind) = binary_store_kind(&bytes) {
        return Err(convert_store_hint(path, "ssl.key.location", kind));
    }
    let text = String::from_utf8_lossy(&bytes);
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .collect();
    if labels.contains(&"ENCRYPTED PRIVATE KEY") {
        let Some(password) = password else {
            return Err(format!(
                "the private key in {} is encrypted: set ssl.key.password",
                path.display()
            ));
        };
        let password = password
            .reveal()
            .map_err(|e| format!("ssl.key.password: {e}"))?;
        return decrypt_pkcs8(&text, path, password.as_bytes());
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "the private key in {} uses OpenSSL's legacy PEM encryption, which is not supported: convert it to encrypted PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc -in {} -out key.p8.pem) and set ssl.key.password",
            path.display(),
            path.display()
        ));
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(_) => Err(format!(
            "{} holds no PEM private key (PRIVATE KEY, ENCRYPTED PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        )),
    }
}

fn decrypt_pkcs8(
    text: &str,
    path: &Path,
    password: &[u8],
) -> Result<PrivateKeyDer<'static>, String> {
    let bad = |what: &str| {
        format!(
            "cannot read the encrypted key in {}: {what}",
            path.display()
        )
    };
    let begin = text
        .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        .ok_or_else(|| bad("no ENCRYPTED PRIVATE KEY block"))?;
    let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
    let end = text[begin..]
        .find(end_marker)
        .ok_or_else(|| bad("the block has no END line"))?;
    let block = &text[begin..begin + end + end_marker.len()];
    let (_, der) = pkcs8::der::pem::decode_vec(block.as_bytes())
        .map_err(|_| bad("the PEM block is damaged"))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|_| bad("not an encrypted PKCS#8 structure"))?;
    let plain = info.decrypt(password).map_err(|_| {
        format!(
            "cannot decrypt the key in {}: wrong ssl.key.password, or a cipher other than PBES2 (AES + PBKDF2/scrypt); re-encrypt with openssl pkcs8 -topk8 -v2 aes-256-cbc",
            path.display()
        )
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
}

fn read_file(path: &Path, property: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {} ({property}): {e}", path.display()))
}

/// A Java key store, recognised by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    Jks,
    Pkcs12,
}

fn binary_store_kind(bytes: &[u8]) -> Option<StoreKind> {
    match bytes {
        [0xFE, 0xED, 0xFE, 0xED, ..] | [0xCE, 0xCE, 0xCE, 0xCE, ..] => Some(StoreKind::Jks),
        // DER SEQUENCE: a PKCS#12 file (PEM is text and starts with '-').
        [0x30, ..] => Some(StoreKind::Pkcs12),
        _ => None,
    }
}

fn convert_store_hint(path: &Path, property: &str, kind: StoreKind) -> String {
    let p = path.display();
    match (kind, property) {
        (StoreKind::Jks, "ssl.ca.location") => format!(
            "{p} ({property}) is a Java key store (JKS); mykafkams reads PEM: convert it with keytool -exportcert -rfc -keystore {p} -alias <alias> -file ca.pem and set ssl.ca.location=ca.pem"
        ),
        (StoreKind::Pkcs12, "ssl.ca.location") => format!(
            "{p} ({property}) is a PKCS#12 store; mykafkams reads PEM: convert it with openssl pkcs12 -in {p} -nokeys -out ca.pem and set ssl.ca.location=ca.pem"
        ),
        (StoreKind::Jks, _) => format!(
            "{p} ({property}) is a Java key store (JKS); mykafkams reads PEM: convert it to PKCS#12 (keytool -importkeystore -srckeystore {p} -destkeystore client.p12 -deststoretype PKCS12), then to PEM (openssl pkcs12 -in client.p12 -nokeys -out client.pem; openssl pkcs12 -in client.p12 -nocerts -out client.key)"
        ),
        (StoreKind::Pkcs12, _) => format!(
            "{p} ({property}) is a PKCS#12 store; mykafkams reads PEM: openssl pkcs12 -in {p} -nokeys -out client.pem and openssl pkcs12 -in {p} -nocerts -out client.key"
        ),
    }
}

/// The web PKI check, minus the name check when hostname verification is
/// off (the chain must still lead to a trusted CA).
struct BrokerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verify_hostname: bool,
}

impl fmt::Debug for BrokerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerVerifier")
            .field("verify_hostname", &self.verify_hostname)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for BrokerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Explains a failed TLS handshake with `broker` (`host` is the name we
/// checked the certificate against) in one line that says what to do.
pub fn explain_handshake_error(host: &str, err: &std::io::Error) -> String {
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(cert)) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the broker's certificate is not trusted (signed by an unknown CA): set ssl.ca.location to the PEM file of the CA that signed it".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the broker's certificate is not valid for the host name '{host}': connect by a name the certificate lists (advertised.listeners), or set ssl.ca.location to the right CA; only for testing, ssl.endpoint.identification.algorithm= (empty) turns the name check off"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired: renew it on the broker".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet: check the clocks of broker and client"
                    .into()
            }
            other => format!("the broker's certificate was rejected ({other:?}): check ssl.ca.location"),
        },
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired),
        )) => format!(
            "the broker refused the TLS handshake ({alert:?}): the listener wants a client certificate it trusts (mutual TLS): set ssl.certificate.location and ssl.key.location to a certificate signed by a CA the broker trusts"
        ),
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the broker refused the TLS handshake ({alert:?}): check that the port is the broker's TLS listener and its TLS versions (1.2, 1.3)"
        ),
        Some(rustls::Error::InvalidMessage(_)) | Some(rustls::Error::InappropriateMessage { .. }) => {
            "the port does not speak TLS: use security.protocol=PLAINTEXT or SASL_PLAINTEXT there, or the broker's TLS port".into()
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mykafkams-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_jks_trust_store_gets_a_conversion_hint() {
        let path = temp_file("store.jks", &[0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2]);
        let settings = TlsSettings {
            ca_location: Some(path),
            ..TlsSettings::default()
        };
        let err = settings.client_config().unwrap_err();
        assert!(
            err.contains("JKS") && err.contains("keytool -exportcert"),
            "{err}"
        );
    }

    #[test]
    fn a_pkcs12_store_gets_a_conversion_hint() {
        let path = temp_file("store.p12", &[0x30, 0x82, 0x0a, 0x00]);
        let settings = TlsSettings {
            ca_location: Some(path),
            ..TlsSettings::default()
        };
        let err = settings.client_config().unwrap_err();
        assert!(
            err.contains("PKCS#12") && err.contains("openssl pkcs12"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_named() {
        let path = temp_file("empty.pem", b"not a certificate\n");
        let settings = TlsSettings {
            ca_location: Some(path.clone()),
            ..TlsSettings::default()
        };
        let err = settings.client_config().unwrap_err();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_names_the_property() {
        let settings = TlsSettings {
            ca_location: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsSettings::default()
        };
        let err = settings.client_config().unwrap_err();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("ssl.ca.location"),
            "{err}"
        );
    }

    #[test]
    fn an_encrypted_key_without_password_asks_for_it() {
        let path = temp_file(
            "enc.key",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = read_private_key(&path, None).unwrap_err();
        assert!(
            err.contains("encrypted") && err.contains("ssl.key.password"),
            "{err}"
        );
    }

    #[test]
    fn a_legacy_encrypted_key_gets_a_conversion_hint() {
        let path = temp_file(
            "legacy.key",
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        let err = read_private_key(&path, Some(&Secret::literal("pw"))).unwrap_err();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
    }

    #[test]
    fn the_system_store_is_the_default() {
        // This machine has ca-certificates; the config must build from it.
        if rustls_native_certs::load_native_certs().certs.is_empty() {
            return;
        }
        TlsSettings::default().client_config().unwrap();
    }
}
