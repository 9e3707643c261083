//! Certificates made for one test run (rcgen): a CA, and certificates it signs for servers and
//! clients, valid or expired, written as PEM files into a temporary directory that is removed when
//! the test ends.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A directory of its own under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gangway-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Write `contents` to `name` in the directory; returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a certificate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    Server,
    Client,
}

/// Validity of a certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    /// rcgen's default span, 1975 to 4096.
    Current,
    /// 2000-01-01 to 2001-01-01.
    Expired,
    /// 4000-01-01 to 4001-01-01.
    NotYetValid,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let (from, to) = match self {
            Validity::Current => return,
            Validity::Expired => (2000, 2001),
            Validity::NotYetValid => (4000, 4001),
        };
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
}

/// A certificate and its key, as PEM files.
pub(crate) struct Issued {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// A certificate authority for one test, with its certificate as a PEM file.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub(crate) dir: TempDir,
    pub(crate) cert: PathBuf,
    name: String,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = TempDir::new();
        let cert = dir.write(&format!("{name}-ca.pem"), &issuer.pem());
        TestCa {
            issuer,
            dir,
            cert,
            name: name.to_owned(),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this CA; the file names
    /// start with `label`.
    pub(crate) fn issue(
        &self,
        label: &str,
        names: &[&str],
        usage: Usage,
        validity: Validity,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{} {label}", self.name));
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity.apply(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: self.dir.write(&format!("{label}-cert.pem"), &cert.pem()),
            key: self
                .dir
                .write(&format!("{label}-key.pem"), &key.serialize_pem()),
        }
    }
}

/// A self-signed certificate for `names` that is also a CA (`CA:TRUE`), and its key: what
/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost` makes with OpenSSL 3, the usual test certificate.
pub(crate) fn self_signed_ca_certificate(
    dir: &TempDir,
    names: &[&str],
    validity: Validity,
) -> Issued {
    self_signed(dir, names, validity, true)
}

/// A self-signed certificate for `names` that is not a CA (`CA:FALSE`, as
/// `openssl req -x509 -addext basicConstraints=critical,CA:FALSE` makes it), and its key.
pub(crate) fn self_signed_certificate(dir: &TempDir, names: &[&str], validity: Validity) -> Issued {
    self_signed(dir, names, validity, false)
}

fn self_signed(dir: &TempDir, names: &[&str], validity: Validity, ca: bool) -> Issued {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).unwrap();
    params.is_ca = if ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    validity.apply(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let label = format!("self-signed-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    Issued {
        cert: dir.write(&format!("{label}-cert.pem"), &cert.pem()),
        key: dir.write(&format!("{label}-key.pem"), &key.serialize_pem()),
    }
}
