//! TLS with rustls (feature `rustls`, on by default): `wss://` clients and TLS servers.
//!
//! **Clients**: [`ClientBuilder::connect`](crate::ClientBuilder::connect) speaks TLS for
//! `wss://` URLs. It sends the URL's host as SNI (none for an IP address, as TLS requires),
//! checks the certificate against that name, and offers ALPN `http/1.1`. Whom it trusts:
//!
//! - by default the platform's root certificates (feature `native-roots`, on by default; read
//!   once per process) and/or Mozilla's, compiled in (feature `webpki-roots`);
//! - [`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file): the CA certificates of a PEM
//!   file *instead* (as curl's `--cacert` does);
//! - [`ClientBuilder::tls_config`](crate::ClientBuilder::tls_config): a complete
//!   [`rustls::ClientConfig`] of your own (pinning, other roots, TLS versions).
//!
//! A client certificate comes from
//! [`ClientBuilder::client_cert_files`](crate::ClientBuilder::client_cert_files).
//!
//! **Servers** terminate TLS with a [`TlsAcceptor`], then hand the encrypted stream to
//! [`ServerBuilder::accept`](crate::ServerBuilder::accept) or
//! [`read_request`](crate::ServerBuilder::read_request) like any other stream:
//!
//! ```no_run
//! # async fn run() -> Result<(), gangway::Error> {
//! let acceptor = gangway::tls::acceptor_from_pem_files("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9443").await?;
//! let (tcp, _) = listener.accept().await?;
//! // Bound the TLS handshake like the WebSocket one: a silent client must not hold a task.
//! let tls = tokio::time::timeout(gangway::DEFAULT_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
//!     .await
//!     .map_err(|_| gangway::Error::Timeout)??;
//! let ws = gangway::ServerBuilder::new().accept(tls).await?;
//! # Ok(()) }
//! ```
//!
//! To ask clients for certificates, build the [`rustls::ServerConfig`] yourself with
//! [`crypto_provider`] and a `rustls::server::WebPkiClientVerifier`, then
//! `TlsAcceptor::from(Arc::new(config))`.
//!
//! The cryptography is rustls's `ring` provider, used explicitly (never the process-wide
//! default), so another crate choosing a different provider changes nothing here.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::CertificateError;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

pub use rustls;
pub use tokio_rustls::{
    client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream,
};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

// The ALPN protocol both roles offer by default: WebSocket upgrades happen on HTTP/1.1.
use crate::client::ALPN_HTTP_1_1;
use crate::{Error, TlsError};

/// The cryptography every configuration made here uses: rustls's `ring` provider. Use it for a
/// [`rustls::ClientConfig`] or [`rustls::ServerConfig`] of your own
/// (`ClientConfig::builder_with_provider(crypto_provider())`).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in a PEM file (`-----BEGIN CERTIFICATE-----` sections), in order.
///
/// # Errors
///
/// [`Error::Tls`] when the file cannot be read, is not PEM, or holds no certificate.
pub fn certificates_from_pem_file(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = path.as_ref();
    let context = || format!("cannot read certificates from {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::new(context(), e))?;
    if certs.is_empty() {
        return Err(TlsError::msg(format!("no certificate in {}", path.display())).into());
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
///
/// # Errors
///
/// [`Error::Tls`] when the file cannot be read, is not PEM, or holds no private key.
pub fn private_key_from_pem_file(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let context = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                return TlsError::msg(format!("no private key in {}", path.display())).into();
            }
            _ => format!("cannot read a private key from {}", path.display()),
        };
        Error::Tls(TlsError::new(context, e))
    })
}

/// A server configuration from a PEM certificate chain (the server's certificate first, then
/// the intermediates) and its PEM private key: TLS 1.2 and 1.3, ALPN `http/1.1`, no client
/// certificates asked for.
///
/// # Errors
///
/// [`Error::Tls`] when a file cannot be read or parsed, or the key does not suit the
/// certificate.
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<ServerConfig, Error> {
    let certs = certificates_from_pem_file(cert_chain)?;
    let key = private_key_from_pem_file(key)?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("unusable tls settings", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new("unusable server certificate or key", e))?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(config)
}

/// A [`TlsAcceptor`] from PEM files, as [`server_config_from_pem_files`] configures it.
///
/// # Errors
///
/// As [`server_config_from_pem_files`].
pub fn acceptor_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<TlsAcceptor, Error> {
    Ok(TlsAcceptor::from(Arc::new(server_config_from_pem_files(
        cert_chain, key,
    )?)))
}

/// The TLS settings of a [`ClientBuilder`](crate::ClientBuilder).
#[derive(Clone, Default)]
pub(crate) struct ClientTls {
    /// Trust these instead of the default roots.
    pub(crate) roots: Option<Vec<CertificateDer<'static>>>,
    /// Our certificate chain and key (a key cannot be cloned, so it is shared).
    pub(crate) identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Skip certificate verification.
    pub(crate) insecure: bool,
    /// A complete configuration that replaces all of the above.
    pub(crate) config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.as_ref().map(Vec::len))
            .field("client_cert", &self.identity.is_some())
            .field("insecure", &self.insecure)
            .field("custom_config", &self.config.is_some())
            .finish()
    }
}

impl ClientTls {
    /// The configuration to connect with; the default one is built once per process.
    fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let is_default = self.roots.is_none() && self.identity.is_none() && !self.insecure;
        if is_default {
            static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
            if let Some(config) = DEFAULT.get() {
                return Ok(config.clone());
            }
            let config = Arc::new(self.build()?);
            return Ok(DEFAULT.get_or_init(|| config).clone());
        }
        Ok(Arc::new(self.build()?))
    }

    fn build(&self) -> Result<ClientConfig, Error> {
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("unusable tls settings", e))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        } else {
            match &self.roots {
                Some(certs) => {
                    let mut roots = RootCertStore::empty();
                    for cert in certs {
                        roots
                            .add(cert.clone())
                            .map_err(|e| TlsError::new("unusable ca certificate", e))?;
                    }
                    let verifier =
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                            .build()
                            .map_err(|e| TlsError::new("unusable ca certificate", e))?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(TrustedFile {
                            verifier,
                            trusted: certs.clone(),
                        }))
                }
                None => builder.with_root_certificates(default_roots()?),
            }
        };
        let mut config = match &self.identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| TlsError::new("unusable client certificate or key", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Ok(config)
    }

    /// TLS on `stream` to `host` (the URL's host, without IPv6 brackets), offering the ALPN
    /// protocols `alpn` (a configuration of the caller's own keeps its ALPN when it is
    /// `http/1.1` alone, which is asked for by every connection but HTTP/2 ones).
    pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        host: &str,
        stream: S,
        alpn: &[&[u8]],
    ) -> Result<ClientTlsStream<S>, Error> {
        let mut config = self.client_config()?;
        if alpn != [ALPN_HTTP_1_1] {
            let mut with_alpn = (*config).clone();
            with_alpn.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            config = Arc::new(with_alpn);
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| TlsError::new(format!("{host:?} is not a valid tls server name"), e))?;
        TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| {
                let context = format!("tls handshake with {host} failed");
                // The handshake reports TLS failures as I/O errors wrapping the TLS error.
                match e.downcast::<rustls::Error>() {
                    Ok(tls) => TlsError::new(context, Explained::new(tls)).into(),
                    // A plain-text server that reads the ClientHello as a bad request and hangs
                    // up, or a TLS server that refuses the connection without an alert.
                    Err(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => TlsError::new(
                        context,
                        "the server closed the connection during the tls handshake",
                    )
                    .into(),
                    Err(io) => TlsError::new(context, io).into(),
                }
            })
    }
}

/// The verifier of [`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file): the file's
/// certificates are the trust anchors, and a certificate that is exactly one of them is also
/// accepted as the server's own, as curl (OpenSSL) and Python's `ssl` accept it.
///
/// `openssl req -x509` (OpenSSL 3) marks the self-signed certificate it makes `CA:TRUE`, and
/// webpki refuses a CA certificate as a server's (`CaUsedAsEndEntity`): the usual way of making
/// a test certificate would otherwise fail with the very file the server uses. Trusting the
/// exact certificate is what giving it means; the name is still checked, and so is its validity
/// period (webpki checks the dates before the CA flag, so a certificate refused only for the
/// flag is in date; a test pins this with an expired CA certificate).
#[derive(Debug)]
struct TrustedFile {
    verifier: Arc<WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for TrustedFile {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if is_ca_used_as_end_entity(&other)
                    && self
                        .trusted
                        .iter()
                        .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                let cert = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&cert, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.supported_verify_schemes()
    }
}

/// Whether webpki refused a CA certificate presented as a server's.
fn is_ca_used_as_end_entity(other: &rustls::OtherError) -> bool {
    matches!(
        other.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// A TLS failure in words a person reads (rustls shows some of its errors as debug dumps, such
/// as `Other(OtherError(CaUsedAsEndEntity))`); the error itself stays available to programs
/// through [`TlsError::rustls_error`].
#[derive(Debug)]
pub(crate) struct Explained {
    text: String,
    error: rustls::Error,
}

impl Explained {
    pub(crate) fn new(error: rustls::Error) -> Self {
        Explained {
            text: explain(&error),
            error,
        }
    }

    pub(crate) fn rustls_error(&self) -> &rustls::Error {
        &self.error
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Explained {}

/// One lowercase line for a TLS error.
fn explain(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(e) => explain_certificate(e),
        // What a plain-text server's answer (`HTTP/1.1 400 ...`) looks like to TLS.
        rustls::Error::InvalidMessage(_) => {
            "the server did not answer with tls (is it a plain ws:// server?)".to_owned()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the tls handshake (alert: {alert:?})")
        }
        rustls::Error::NoApplicationProtocol => {
            "the server does not speak http/1.1 (no common alpn protocol)".to_owned()
        }
        other => other.to_string(),
    }
}

/// What is wrong with the server's certificate, in one line.
fn explain_certificate(e: &CertificateError) -> String {
    use CertificateError as E;
    let text = match e {
        E::BadEncoding => "the certificate is malformed",
        E::Expired => "the certificate has expired",
        E::ExpiredContext { not_after, .. } => {
            return format!("the certificate expired on {}", utc(*not_after))
        }
        E::NotValidYet => "the certificate is not valid yet",
        E::NotValidYetContext { not_before, .. } => {
            return format!("the certificate is not valid before {}", utc(*not_before))
        }
        E::Revoked => "the certificate was revoked",
        E::UnhandledCriticalExtension => "the certificate has a critical extension not understood",
        E::UnknownIssuer => {
            "the certificate was not issued by a trusted ca (unknown issuer; self-signed, or its \
             ca is not among the trusted certificates)"
        }
        E::BadSignature => "the certificate's signature is not valid",
        E::NotValidForName => "the certificate is not valid for this server name",
        E::NotValidForNameContext {
            expected,
            presented,
        } => {
            let expected = expected.to_str();
            return if presented.is_empty() {
                format!("name {expected} does not match the certificate, which names no host")
            } else {
                let names: Vec<&str> = presented.iter().map(|n| presented_name(n)).collect();
                format!(
                    "name {expected} does not match the certificate's names: {}",
                    names.join(", ")
                )
            };
        }
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            "the certificate is not for tls servers (extended key usage)"
        }
        E::ApplicationVerificationFailure => "the certificate was refused by the verifier",
        E::Other(other) => {
            return match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => {
                    "the certificate is a ca certificate used as a server certificate".to_owned()
                }
                Some(webpki::Error::EndEntityUsedAsCa) => {
                    "a server certificate is used as a ca in the chain".to_owned()
                }
                Some(webpki::Error::PathLenConstraintViolated) => {
                    "the chain is longer than a ca allows (path length constraint)".to_owned()
                }
                _ => format!("the certificate was refused: {other}"),
            }
        }
        other => return format!("the certificate was refused: {other}"),
    };
    text.to_owned()
}

/// A name as webpki reports it (`DnsName("example.com")`, `IpAddress(192.0.2.1)`), bare.
fn presented_name(name: &str) -> &str {
    if let Some(dns) = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
    {
        return dns;
    }
    name.strip_prefix("IpAddress(")
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(name)
}

/// `2024-05-01 12:00:00 UTC`.
fn utc(time: UnixTime) -> String {
    let secs = time.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The default trust anchors: the platform's and/or Mozilla's, as the features select, loaded
/// once per process.
fn default_roots() -> Result<RootCertStore, Error> {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        #[allow(unused_mut)] // without either roots feature nothing is added
        let mut roots = RootCertStore::empty();
        #[cfg(feature = "native-roots")]
        {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("while loading the platform's root certificates: {e}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "platform root certificates");
        }
        #[cfg(feature = "webpki-roots")]
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots
    });
    if roots.is_empty() {
        return Err(TlsError::msg(
            "no trusted root certificates: enable the native-roots or webpki-roots feature, \
             install the platform's ca certificates, or give a ca file",
        )
        .into());
    }
    Ok(roots.clone())
}

/// The verifier of insecure mode: every certificate is accepted, whoever it names and whoever
/// signed it. The handshake's signatures are still checked, so the peer must hold the key of the
/// certificate it shows, but anyone can make such a certificate: this protects against nothing
/// but passive eavesdropping.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_in_utc() {
        assert_eq!(
            utc(UnixTime::since_unix_epoch(std::time::Duration::ZERO)),
            "1970-01-01 00:00:00 UTC"
        );
        let leap = UnixTime::since_unix_epoch(std::time::Duration::from_secs(951_782_400 + 3_723));
        assert_eq!(utc(leap), "2000-02-29 01:02:03 UTC");
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_102_444_800));
        assert_eq!(utc(later), "2100-01-01 00:00:00 UTC");
    }

    #[test]
    fn certificate_errors_read_as_one_line() {
        let ca = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(webpki::Error::CaUsedAsEndEntity),
        )));
        assert_eq!(
            explain(&ca),
            "the certificate is a ca certificate used as a server certificate"
        );
        let name = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("localhost").unwrap().to_owned(),
            presented: vec!["DnsName(\"example.com\")".into()],
        };
        assert_eq!(
            explain_certificate(&name),
            "name localhost does not match the certificate's names: example.com"
        );
        assert_eq!(presented_name("IpAddress(192.0.2.1)"), "192.0.2.1");
        for e in [
            CertificateError::UnknownIssuer,
            CertificateError::BadEncoding,
            CertificateError::Revoked,
        ] {
            let text = explain_certificate(&e);
            assert!(
                !text.contains('(') || text.contains("unknown issuer"),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1);
        }
    }
}
