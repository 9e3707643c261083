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
//! [`ClientBuilder::client_cert_files`](crate::ClientBuilder::client_cert_files). A refused
//! certificate is explained in one line (the error's [`source`](std::error::Error::source)
//! chain), and one refused because nothing trusted vouches for it says whether it is
//! self-signed or from an unknown CA
//! ([`TlsError::untrusted_certificate`](crate::TlsError::untrusted_certificate)).
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

/// Why a server's certificate is not trusted: nothing among the trusted certificates vouches
/// for it. rustls reports both as `CertificateError::UnknownIssuer`
/// ([`TlsError::rustls_error`](crate::TlsError::rustls_error)); this tells a program what its
/// user would have to trust, e.g. to suggest a command-line option
/// ([`TlsError::untrusted_certificate`](crate::TlsError::untrusted_certificate)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UntrustedCertificate {
    /// The certificate is self-signed (its issuer is itself) and is not among the trusted
    /// certificates: trusting that very certificate
    /// ([`ClientBuilder::ca_file`](crate::ClientBuilder::ca_file) with it) is what would help.
    SelfSigned,
    /// The certificate was issued by a CA that is not trusted (or the server did not send the
    /// intermediate certificates leading to a trusted one): trusting that CA would help.
    UnknownIssuer,
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
            let (roots, trusted, unusable) = match &self.roots {
                Some(certs) => {
                    let mut roots = RootCertStore::empty();
                    for cert in certs {
                        roots
                            .add(cert.clone())
                            .map_err(|e| TlsError::new("unusable ca certificate", e))?;
                    }
                    (roots, certs.clone(), "unusable ca certificate")
                }
                None => (default_roots()?, Vec::new(), "unusable root certificates"),
            };
            let roots = Arc::new(roots);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
                .build()
                .map_err(|e| TlsError::new(unusable, e))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    webpki,
                    roots,
                    trusted,
                }))
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
                    Ok(tls) => TlsError::new(context, Explained::new(tls, Some(host))).into(),
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

/// The verifier of the configurations made here (the default roots, or a CA file): webpki's,
/// with two differences.
///
/// **A certificate that is exactly one of the CA file's** ([`ClientBuilder::ca_file`](
/// crate::ClientBuilder::ca_file)) is accepted as the server's own, as curl (OpenSSL) and
/// Python's `ssl` accept it. `openssl req -x509` (OpenSSL 3) marks the self-signed certificate it
/// makes `CA:TRUE`, and webpki refuses a CA certificate as a server's (`CaUsedAsEndEntity`): the
/// usual way of making a test certificate would otherwise fail with the very file the server
/// uses. Trusting the exact certificate is what giving it means; the name is still checked, and
/// so is its validity period (webpki checks the dates before the CA flag, so a certificate
/// refused only for the flag is in date; a test pins this with an expired CA certificate).
///
/// **A self-signed certificate that nothing trusts** is refused as such ([`SelfSignedNotTrusted`],
/// which [`Explained`] reports as `UnknownIssuer`, [`UntrustedCertificate::SelfSigned`]).
/// webpki reports it as `UnknownIssuer` (no trusted issuer), as `BadSignature` when a trusted
/// certificate has its name but another key, or as `CaUsedAsEndEntity` when it is marked
/// `CA:TRUE` (the flag is checked before the issuer is looked for): each reads as if something
/// were wrong with the certificate when trusting it is what is missing. The alert the server
/// receives is then `certificate_unknown` (rustls's for a refusal of the verifier's own) rather
/// than, say, `unknown_ca`: both say the client refused the certificate.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The trust anchors `webpki` checks against.
    roots: Arc<RootCertStore>,
    /// The CA file's certificates (none with the default roots).
    trusted: Vec<CertificateDer<'static>>,
}

impl Verifier {
    /// Whether `cert` is self-signed (its issuer is its subject) with a key that is not a trust
    /// anchor's.
    ///
    /// Self-issued, strictly, as OpenSSL's "self-signed" is: the signature is not checked. A
    /// certificate refused for having no trusted issuer whose issuer is its own subject is
    /// either self-signed or issued by an untrusted CA of the same name, which no server
    /// presents.
    fn is_untrusted_self_signed(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        if parsed.issuer() != parsed.subject() {
            return false;
        }
        // A trust anchor's own certificate presented by a server (`CaUsedAsEndEntity`) is
        // trusted, and refused for its flag alone.
        let Ok(anchor) = webpki::anchor_from_trusted_cert(cert) else {
            return false;
        };
        !self.roots.roots.iter().any(|root| {
            root.subject == anchor.subject
                && root.subject_public_key_info == anchor.subject_public_key_info
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(refused)) => refused,
            verified => return verified,
        };
        let ca_as_end_entity = matches!(
            &refused,
            CertificateError::Other(other) if is_ca_used_as_end_entity(other)
        );
        if ca_as_end_entity
            && self
                .trusted
                .iter()
                .any(|t| t.as_ref() == end_entity.as_ref())
        {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        // webpki's `BadSignature` for a self-signed certificate: a trusted certificate has its
        // name but another key (the certificate was made again, the file given is the old one).
        let no_trusted_issuer = ca_as_end_entity
            || matches!(
                refused,
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            );
        if no_trusted_issuer && self.is_untrusted_self_signed(end_entity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(SelfSignedNotTrusted)),
            )));
        }
        Err(rustls::Error::InvalidCertificate(refused))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.webpki.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// A self-signed server certificate that is not trusted, as [`Verifier`] refuses it (rustls
/// carries it as `CertificateError::Other`).
#[derive(Debug)]
struct SelfSignedNotTrusted;

impl fmt::Display for SelfSignedNotTrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("self-signed certificate is not trusted")
    }
}

impl std::error::Error for SelfSignedNotTrusted {}

/// Whether webpki refused a CA certificate presented as a server's.
fn is_ca_used_as_end_entity(other: &rustls::OtherError) -> bool {
    matches!(
        other.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

/// A TLS failure in words a person reads (rustls shows some of its errors as debug dumps, such
/// as `Other(OtherError(CaUsedAsEndEntity))`); the error itself stays available to programs
/// through [`TlsError::rustls_error`], and whether the certificate is untrusted through
/// [`TlsError::untrusted_certificate`].
#[derive(Debug)]
pub(crate) struct Explained {
    text: String,
    error: rustls::Error,
    untrusted: Option<UntrustedCertificate>,
}

impl Explained {
    /// `error` from a connection to `server` (the name the client asked for, when known).
    pub(crate) fn new(error: rustls::Error, server: Option<&str>) -> Self {
        let text = explain(&error, server);
        let self_signed = matches!(
            &error,
            rustls::Error::InvalidCertificate(CertificateError::Other(other))
                if other.0.is::<SelfSignedNotTrusted>()
        );
        // Programs see what rustls's own verifier says of an untrusted certificate.
        let (error, untrusted) = if self_signed {
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                Some(UntrustedCertificate::SelfSigned),
            )
        } else if error == rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) {
            (error, Some(UntrustedCertificate::UnknownIssuer))
        } else {
            (error, None)
        };
        Explained {
            text,
            error,
            untrusted,
        }
    }

    pub(crate) fn rustls_error(&self) -> &rustls::Error {
        &self.error
    }

    pub(crate) fn untrusted_certificate(&self) -> Option<UntrustedCertificate> {
        self.untrusted
    }
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Explained {}

/// One lowercase line for a TLS error on a connection to `server` (when known).
fn explain(error: &rustls::Error, server: Option<&str>) -> String {
    match error {
        rustls::Error::InvalidCertificate(e) => explain_certificate(e, server),
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

/// What is wrong with the certificate of `server` (when known), in one line.
fn explain_certificate(e: &CertificateError, server: Option<&str>) -> String {
    use CertificateError as E;
    let certificate = match server {
        Some(server) => format!("certificate for {server}"),
        None => "the certificate".to_owned(),
    };
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
        // As curl says "unable to get local issuer certificate" (and the server may have left
        // out an intermediate certificate, which this cannot tell apart).
        E::UnknownIssuer => return format!("{certificate} was not issued by a trusted ca"),
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
        E::Other(other) if other.0.is::<SelfSignedNotTrusted>() => {
            return match server {
                Some(server) => format!("self-signed certificate for {server} is not trusted"),
                None => "the self-signed certificate is not trusted".to_owned(),
            };
        }
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
            explain(&ca, Some("localhost")),
            "the certificate is a ca certificate used as a server certificate"
        );
        let name = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("localhost").unwrap().to_owned(),
            presented: vec!["DnsName(\"example.com\")".into()],
        };
        assert_eq!(
            explain_certificate(&name, Some("localhost")),
            "name localhost does not match the certificate's names: example.com"
        );
        assert_eq!(presented_name("IpAddress(192.0.2.1)"), "192.0.2.1");
        for e in [
            CertificateError::UnknownIssuer,
            CertificateError::BadEncoding,
            CertificateError::Revoked,
        ] {
            for server in [None, Some("localhost")] {
                let text = explain_certificate(&e, server);
                assert!(!text.contains('('), "{text}");
                assert_eq!(text.lines().count(), 1);
            }
        }
    }

    /// A verifier trusting `trusted` (DER certificates), as `ClientBuilder::ca_file` makes it.
    fn verifier_trusting(trusted: Vec<CertificateDer<'static>>) -> Verifier {
        let mut roots = RootCertStore::empty();
        for cert in &trusted {
            roots.add(cert.clone()).unwrap();
        }
        let roots = Arc::new(roots);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), crypto_provider())
            .build()
            .unwrap();
        Verifier {
            webpki,
            roots,
            trusted,
        }
    }

    /// A self-signed certificate for localhost with `key`; `serial` tells two apart.
    fn self_signed(key: &rcgen::KeyPair, ca: bool, serial: u64) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.serial_number = Some(serial.into());
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.is_ca = if ca {
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            rcgen::IsCa::ExplicitNoCa
        };
        params.self_signed(key).unwrap().der().clone()
    }

    fn verify(verifier: &Verifier, cert: &CertificateDer<'_>) -> Result<(), String> {
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| explain(&e, Some("localhost")))
    }

    #[test]
    fn the_verifier_tells_untrusted_self_signed_certificates_from_trusted_keys() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let ca = self_signed(&key, true, 1);
        let not_ca = self_signed(&key, false, 2);
        let untrusted = verifier_trusting(vec![self_signed(&other_key, true, 3)]);
        // Not trusted, whether webpki sees the CA flag first (the certificate is refused as a
        // CA) or looks for the issuer and finds a trusted certificate of the same name with
        // another key (a signature that does not verify).
        for cert in [&ca, &not_ca] {
            assert_eq!(
                verify(&untrusted, cert),
                Err("self-signed certificate for localhost is not trusted".to_owned())
            );
        }
        // Trusted as given: accepted, CA or not.
        assert_eq!(verify(&verifier_trusting(vec![ca.clone()]), &ca), Ok(()));
        assert_eq!(
            verify(&verifier_trusting(vec![not_ca.clone()]), &not_ca),
            Ok(())
        );
        // Another certificate of a trusted key and name, marked CA: its key is trusted, and
        // what webpki refuses is the flag.
        let same_key = verifier_trusting(vec![self_signed(&key, true, 4)]);
        assert_eq!(
            verify(&same_key, &ca),
            Err("the certificate is a ca certificate used as a server certificate".to_owned())
        );
        assert_eq!(verify(&same_key, &not_ca), Ok(()));
    }

    #[test]
    fn an_untrusted_self_signed_certificate_reads_as_such_and_is_an_unknown_issuer() {
        let refused = rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(SelfSignedNotTrusted)),
        ));
        let explained = Explained::new(refused.clone(), Some("localhost"));
        assert_eq!(
            explained.to_string(),
            "self-signed certificate for localhost is not trusted"
        );
        assert_eq!(
            explained.rustls_error(),
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
        assert_eq!(
            explained.untrusted_certificate(),
            Some(UntrustedCertificate::SelfSigned)
        );
        assert_eq!(
            Explained::new(refused, None).to_string(),
            "the self-signed certificate is not trusted"
        );

        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let explained = Explained::new(unknown.clone(), Some("example.com"));
        assert_eq!(
            explained.to_string(),
            "certificate for example.com was not issued by a trusted ca"
        );
        assert_eq!(
            explained.untrusted_certificate(),
            Some(UntrustedCertificate::UnknownIssuer)
        );
        assert_eq!(explained.rustls_error(), &unknown);
        let expired = Explained::new(
            rustls::Error::InvalidCertificate(CertificateError::Expired),
            Some("example.com"),
        );
        assert_eq!(expired.untrusted_certificate(), None);
    }
}
