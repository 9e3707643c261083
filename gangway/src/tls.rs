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
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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
            let roots = match &self.roots {
                Some(certs) => {
                    let mut roots = RootCertStore::empty();
                    for cert in certs {
                        roots
                            .add(cert.clone())
                            .map_err(|e| TlsError::new("unusable ca certificate", e))?;
                    }
                    roots
                }
                None => default_roots()?,
            };
            builder.with_root_certificates(roots)
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
                    Ok(tls) => TlsError::new(context, tls).into(),
                    Err(io) => TlsError::new(context, io).into(),
                }
            })
    }
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
