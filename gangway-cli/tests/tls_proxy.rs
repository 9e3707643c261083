//! The `gangway` binary over TLS and through proxies: `serve --tls-cert/--tls-key`,
//! `connect --cacert/--insecure/--cert/--key`, `connect --proxy/--noproxy` and the proxy
//! environment variables, against certificates and proxies made in the test.
//!
//! Every test is bounded in time and kills the processes it started on every path. Each child
//! gets a clean proxy environment, so the tests do not depend on the machine's.

#[path = "../../gangway/tests/support/certs.rs"]
mod certs;
#[path = "../../gangway/tests/support/proxies.rs"]
mod proxies;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use certs::{Issued, TestCa, Usage, Validity};
use futures_util::{SinkExt, StreamExt};
use gangway::tls::{self, rustls};
use gangway::{Message, ServerBuilder};
use proxies::{Options, TestProxy};
use support::{Proc, TIMEOUT};

/// Proxy variables cleared from every child's environment.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The binary, with no proxy variables of the machine's.
fn gangway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gangway"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn collect(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    })
}

/// What a finished `gangway connect` did.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `cmd` with `input` on stdin (then EOF); bounded.
fn run(cmd: &mut Command, input: &str) -> Outcome {
    let mut proc = Proc(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gangway starts"),
    );
    let stdout = collect(proc.0.stdout.take().expect("stdout"));
    let stderr = collect(proc.0.stderr.take().expect("stderr"));
    let mut stdin = proc.0.stdin.take().expect("stdin");
    // The child may exit before reading (a refused connection): a broken pipe is fine.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let status = proc.wait();
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A running `gangway serve --listen 127.0.0.1:0 ARGS...`.
struct Serve {
    _proc: Proc,
    addr: SocketAddr,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut proc = Proc(
            gangway()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("gangway serve starts"),
        );
        let stdout = proc.0.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("serve prints its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Serve { _proc: proc, addr }
    }

    /// `gangway serve` with TLS, with a certificate for `localhost` from `ca`.
    fn tls(ca: &TestCa, validity: Validity) -> Serve {
        let issued = ca.issue("serve", &["localhost"], Usage::Server, validity);
        Serve::start(&tls_args(&issued))
    }

    fn wss_url(&self) -> String {
        format!("wss://localhost:{}/", self.addr.port())
    }
}

fn tls_args(issued: &Issued) -> [&str; 4] {
    [
        "--tls-cert",
        path_str(&issued.cert),
        "--tls-key",
        path_str(&issued.key),
    ]
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn serve_with_tls_echoes_to_connect_with_cacert() {
    let ca = TestCa::new("cli");
    let serve = Serve::tls(&ca, Validity::Current);
    let out = run(
        gangway().args(["connect", &serve.wss_url(), "--cacert", path_str(&ca.cert)]),
        "hello over wss\nsecond 🔒\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "hello over wss\nsecond 🔒\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn serve_with_tls_answers_the_demo_page_over_https() {
    let ca = TestCa::new("cli-page");
    let serve = Serve::tls(&ca, Validity::Current);
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        for cert in tls::certificates_from_pem_file(&ca.cert).unwrap() {
            roots.add(cert).unwrap();
        }
        roots
    };
    let config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut tcp = std::net::TcpStream::connect(serve.addr).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // The server closes after the answer; a missing close_notify would be an error here.
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{answer}"
    );
}

#[test]
fn connect_refuses_a_certificate_for_another_host_and_says_so() {
    let ca = TestCa::new("cli-wrong-host");
    let issued = ca.issue(
        "serve",
        &["other.example"],
        Usage::Server,
        Validity::Current,
    );
    let serve = Serve::start(&tls_args(&issued));
    let out = run(
        gangway().args(["connect", &serve.wss_url(), "--cacert", path_str(&ca.cert)]),
        "",
    );
    // curl's 60: the server's certificate cannot be verified.
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert!(
        out.stderr.starts_with(
            "gangway: tls handshake with localhost failed: name localhost does not match the \
             certificate's names: other.example"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("other.example"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn connect_refuses_an_expired_certificate() {
    let ca = TestCa::new("cli-expired");
    let serve = Serve::tls(&ca, Validity::Expired);
    let out = run(
        gangway().args(["connect", &serve.wss_url(), "--cacert", path_str(&ca.cert)]),
        "",
    );
    // curl's 60: the server's certificate cannot be verified.
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert!(
        out.stderr
            .starts_with("gangway: tls handshake with localhost failed: ")
            && out.stderr.contains("certificate expired"),
        "{}",
        out.stderr
    );
}

#[test]
fn connect_insecure_accepts_what_it_cannot_verify() {
    let ca = TestCa::new("cli-insecure");
    let serve = Serve::tls(&ca, Validity::Expired);
    // Without --cacert the test CA is unknown (or the machine has no roots at all).
    let out = run(gangway().args(["connect", &serve.wss_url()]), "");
    // curl's 60: the server's certificate cannot be verified.
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert!(out.stderr.starts_with("gangway: "), "{}", out.stderr);
    let out = run(
        gangway().args(["connect", &serve.wss_url(), "--insecure"]),
        "anyway\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "anyway\n");
}

#[test]
fn connect_presents_its_client_certificate() {
    let ca = TestCa::new("cli-mtls");
    let clients = TestCa::new("cli-mtls-clients");
    let server_cert = ca.issue("server", &["localhost"], Usage::Server, Validity::Current);
    let client = clients.issue(
        "client",
        &["client.example"],
        Usage::Client,
        Validity::Current,
    );

    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::certificates_from_pem_file(&clients.cert).unwrap() {
        roots.add(cert).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        tls::crypto_provider(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            tls::certificates_from_pem_file(&server_cert.cert).unwrap(),
            tls::private_key_from_pem_file(&server_cert.key).unwrap(),
        )
        .unwrap();
    let acceptor = tls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    // An echo server that answers two connections: one with a certificate, one without.
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut handshakes = Vec::new();
                for _ in 0..2 {
                    let accepted = tokio::time::timeout(TIMEOUT, listener.accept()).await;
                    let (tcp, _) = accepted.expect("a client in time").unwrap();
                    let accepted = acceptor.accept(tcp).await;
                    handshakes.push(accepted.is_ok());
                    let Ok(tls) = accepted else { continue };
                    let mut ws = ServerBuilder::new().accept(tls).await.unwrap();
                    while let Some(Ok(m)) = ws.next().await {
                        if matches!(m, Message::Text(_)) {
                            ws.send(m).await.unwrap();
                        }
                    }
                }
                handshakes
            })
    });
    let url = format!("wss://localhost:{}/", addr.port());
    let out = run(
        gangway().args([
            "connect",
            &url,
            "--cacert",
            path_str(&ca.cert),
            "--cert",
            path_str(&client.cert),
            "--key",
            path_str(&client.key),
        ]),
        "mutual\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "mutual\n");
    let out = run(
        gangway().args(["connect", &url, "--cacert", path_str(&ca.cert)]),
        "",
    );
    // curl's 35, "TLS connect error": the server's alert (certificate required) ends it.
    assert_eq!(out.status.code(), Some(35), "{out:?}");
    assert!(out.stderr.starts_with("gangway: "), "{}", out.stderr);
    assert_eq!(server.join().unwrap(), [true, false]);
}

#[test]
fn tls_options_come_in_pairs() {
    for args in [
        &["connect", "wss://localhost/", "--cert", "c.pem"][..],
        &["connect", "wss://localhost/", "--key", "k.pem"][..],
        &["serve", "--tls-cert", "c.pem"][..],
        &["serve", "--tls-key", "k.pem"][..],
    ] {
        let out = run(gangway().args(args), "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    // A certificate file that does not exist: serve refuses to start, naming it.
    let out = run(
        gangway().args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ]),
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/c.pem"), "{}", out.stderr);
}

#[test]
fn connect_takes_https_proxy_for_wss_from_the_environment() {
    let ca = TestCa::new("cli-proxied");
    let serve = Serve::tls(&ca, Validity::Current);
    let proxy = TestProxy::http(Options::default());
    let unused = TestProxy::http(Options::default());
    let out = run(
        gangway()
            .args(["connect", &serve.wss_url(), "--cacert", path_str(&ca.cert)])
            .env("HTTPS_PROXY", proxy.url("http", None))
            .env("http_proxy", unused.url("http", None)),
        "via https_proxy\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "via https_proxy\n");
    assert_eq!(proxy.log.connections(), 1);
    assert_eq!(
        proxy.log.requests()[0].target,
        format!("localhost:{}", serve.addr.port())
    );
    assert_eq!(unused.log.connections(), 0, "http_proxy is for ws://");
}

#[test]
fn connect_takes_http_proxy_for_ws_and_no_proxy_bypasses_it() {
    let serve = Serve::start(&[]);
    let url = format!("ws://{}/", serve.addr);
    let proxy = TestProxy::http(Options::default());
    let out = run(
        gangway()
            .args(["connect", &url])
            .env("HTTP_PROXY", proxy.url("http", None)),
        "via http_proxy\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "via http_proxy\n");
    assert_eq!(proxy.log.connections(), 1);

    for no_proxy in ["127.0.0.1", "localhost,127.0.0.0/8", "*"] {
        let out = run(
            gangway()
                .args(["connect", &url])
                .env("HTTP_PROXY", proxy.url("http", None))
                .env("NO_PROXY", no_proxy),
            "direct\n",
        );
        assert!(out.status.success(), "{no_proxy}: {out:?}");
        assert_eq!(out.stdout, "direct\n");
    }
    // --noproxy replaces NO_PROXY; --proxy "" turns every proxy off.
    let out = run(
        gangway()
            .args(["connect", &url, "--noproxy", "example.com"])
            .env("HTTP_PROXY", proxy.url("http", None))
            .env("NO_PROXY", "*"),
        "proxied again\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(proxy.log.connections(), 2);
    let out = run(
        gangway()
            .args(["connect", &url, "--proxy", ""])
            .env("ALL_PROXY", proxy.url("http", None)),
        "direct\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(proxy.log.connections(), 2);
}

#[test]
fn connect_proxy_option_and_all_proxy_take_socks5h() {
    let serve = Serve::start(&[]);
    let proxy = TestProxy::socks5(Options {
        credentials: Some(("carol".into(), "s3cret".into())),
        route_to: Some(serve.addr),
        ..Options::default()
    });
    let url = format!("ws://echo.invalid:{}/", serve.addr.port());
    let out = run(
        gangway().args([
            "connect",
            &url,
            "--proxy",
            &proxy.url("socks5h", Some("carol:s3cret")),
        ]),
        "via socks\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "via socks\n");
    let out = run(
        gangway()
            .args(["connect", &url])
            .env("ALL_PROXY", proxy.url("socks5h", Some("carol:s3cret"))),
        "via all_proxy\n",
    );
    assert!(out.status.success(), "{out:?}");
    let requests = proxy.log.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(
            r.target,
            format!("domain echo.invalid:{}", serve.addr.port())
        );
        assert_eq!(r.credentials.as_deref(), Some("carol:s3cret"));
    }
}

#[test]
fn connect_reports_a_proxy_that_refuses_with_its_status() {
    let proxy = TestProxy::http(Options {
        credentials: Some(("dave".into(), "right".into())),
        ..Options::default()
    });
    let out = run(
        gangway().args([
            "connect",
            "ws://127.0.0.1:9/",
            "--proxy",
            &proxy.url("http", Some("dave:wrong")),
        ]),
        "",
    );
    // curl's 97, "proxy handshake error" (curl itself says 56 for a refused CONNECT).
    assert_eq!(out.status.code(), Some(97), "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "gangway: proxy {} refused the tunnel: status 407 Proxy Authentication Required\n",
            proxy.addr
        )
    );
    let out = run(
        gangway().args(["connect", "ws://127.0.0.1:9/", "--proxy", "ftp://x"]),
        "",
    );
    // curl's 5: a proxy URL that cannot be used is reported as an unresolvable proxy.
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        out.stderr.starts_with("gangway: invalid proxy url"),
        "{}",
        out.stderr
    );
}

/// `openssl req -x509` with `-subj /CN=localhost -addext subjectAltName=DNS:localhost`, in
/// `dir`: how most people make a test certificate; OpenSSL 3 marks it CA:TRUE. scripts/test.sh
/// requires openssl.
fn openssl_self_signed(dir: &certs::TempDir) -> Issued {
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("openssl runs (scripts/test.sh requires it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    Issued { cert, key }
}

#[test]
fn serve_and_connect_share_an_openssl_self_signed_certificate() {
    let dir = certs::TempDir::new();
    let issued = openssl_self_signed(&dir);
    let serve = Serve::start(&tls_args(&issued));
    let out = run(
        gangway().args([
            "connect",
            "--eof-wait",
            "5",
            "--max-received",
            "1",
            &serve.wss_url(),
            "--cacert",
            path_str(&issued.cert),
        ]),
        "over tls\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "over tls\n");
    // The name is still checked: 127.0.0.1 is not in the certificate.
    let url = format!("wss://127.0.0.1:{}/", serve.addr.port());
    let out = run(
        gangway().args(["connect", &url, "--cacert", path_str(&issued.cert)]),
        "",
    );
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        "gangway: tls handshake with 127.0.0.1 failed: name 127.0.0.1 does not match the \
         certificate's names: localhost\n"
    );
}

#[test]
fn wss_to_a_plain_server_says_it_did_not_answer_tls() {
    let serve = Serve::start(&[]);
    let url = format!("wss://127.0.0.1:{}/", serve.addr.port());
    let out = run(gangway().args(["connect", &url]), "");
    assert_eq!(out.status.code(), Some(35), "{out:?}");
    assert_eq!(
        out.stderr,
        "gangway: tls handshake with 127.0.0.1 failed: the server did not answer with tls (is it \
         a plain ws:// server?)\n"
    );
}

/// `gangway connect` trusting only the certificates of `roots` as the system's (the
/// `SSL_CERT_FILE` of rustls-native-certs), so the machine's store plays no part.
fn connect_with_system_roots(roots: &Path) -> Command {
    let mut cmd = gangway();
    cmd.env("SSL_CERT_FILE", roots).env_remove("SSL_CERT_DIR");
    cmd.arg("connect");
    cmd
}

#[test]
fn connect_says_a_self_signed_certificate_is_not_trusted_and_how_to_trust_it() {
    let dir = certs::TempDir::new();
    let issued = openssl_self_signed(&dir);
    let serve = Serve::start(&tls_args(&issued));
    let system = TestCa::new("cli-system-roots");
    let out = run(
        connect_with_system_roots(&system.cert).arg(serve.wss_url()),
        "",
    );
    // curl's 60, and curl's diagnosis: the certificate is self-signed (not a misused CA).
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        "gangway: tls handshake with localhost failed: self-signed certificate for localhost is \
         not trusted (give it with --cacert FILE to trust it)\n"
    );
    // Another file given: the hint says it is not in that one.
    let other = TestCa::new("cli-other");
    let out = run(
        gangway().args([
            "connect",
            &serve.wss_url(),
            "--cacert",
            path_str(&other.cert),
        ]),
        "",
    );
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "gangway: tls handshake with localhost failed: self-signed certificate for \
             localhost is not trusted (not in --cacert {})\n",
            other.cert.display()
        )
    );
}

#[test]
fn connect_says_a_certificate_from_an_unknown_ca_is_not_trusted_and_how_to_trust_it() {
    let ca = TestCa::new("cli-unknown-ca");
    let serve = Serve::tls(&ca, Validity::Current);
    let system = TestCa::new("cli-system-roots");
    let out = run(
        connect_with_system_roots(&system.cert).arg(serve.wss_url()),
        "",
    );
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        "gangway: tls handshake with localhost failed: certificate for localhost was not issued \
         by a trusted ca (give the ca's certificate with --cacert FILE to trust it)\n"
    );
    let out = run(
        gangway().args([
            "connect",
            &serve.wss_url(),
            "--cacert",
            path_str(&system.cert),
        ]),
        "",
    );
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "gangway: tls handshake with localhost failed: certificate for localhost was not \
             issued by a trusted ca (its ca is not in --cacert {})\n",
            system.cert.display()
        )
    );
}

#[test]
fn connect_refuses_a_certificate_not_valid_yet_with_its_date() {
    let ca = TestCa::new("cli-not-yet");
    let serve = Serve::tls(&ca, Validity::NotYetValid);
    let out = run(
        gangway().args(["connect", &serve.wss_url(), "--cacert", path_str(&ca.cert)]),
        "",
    );
    assert_eq!(out.status.code(), Some(60), "{out:?}");
    assert_eq!(
        out.stderr,
        "gangway: tls handshake with localhost failed: the certificate is not valid before \
         4000-01-01 00:00:00 UTC\n"
    );
}
