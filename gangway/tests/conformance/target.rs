//! What the suite runs against: gangway in this process (a `ServerBuilder` echo server and a
//! `ClientBuilder` echo client written like the CLI's), or the shipped binary
//! (`gangway serve`, `gangway connect --echo`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gangway::{ClientBuilder, Error, Message, ServerBuilder, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// After a failure, how long the echo loops keep reading so the close frame goes out (as the CLI).
const AFTER_ERROR: Duration = Duration::from_secs(2);

/// After a session, how long the server waits for the client's EOF (as the CLI's linger).
const LINGER: Duration = Duration::from_secs(1);

/// Where gangway comes from.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// The library, in this test process.
    InProcess,
    /// The `gangway` binary at this path.
    Binary(PathBuf),
}

impl Target {
    pub(crate) fn name(&self) -> String {
        match self {
            Target::InProcess => "in-process".to_owned(),
            Target::Binary(p) => format!("binary {}", p.display()),
        }
    }
}

/// A running echo server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    run: ServerRun,
}

enum ServerRun {
    InProcess(JoinHandle<()>),
    /// The child, and its stdout kept open (it printed `listening on ADDR`).
    Binary(Box<(Child, BufReader<ChildStdout>)>),
}

impl Server {
    /// Start an echo server on a free loopback port.
    pub(crate) async fn start(target: &Target) -> Result<Server, String> {
        match target {
            Target::InProcess => {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("bind: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let task = tokio::spawn(async move {
                    while let Ok((tcp, _)) = listener.accept().await {
                        tokio::spawn(serve_connection(tcp));
                    }
                });
                Ok(Server {
                    addr,
                    run: ServerRun::InProcess(task),
                })
            }
            Target::Binary(bin) => {
                let mut child = Command::new(bin)
                    .args(["serve", "--listen", "127.0.0.1:0"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    // One log line per connection: thousands here. Nobody reads them, and an
                    // unread pipe would end up blocking the server.
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let mut stdout = BufReader::new(stdout);
                let mut line = String::new();
                tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
                    .await
                    .map_err(|_| "no `listening on` line within 10 s".to_owned())?
                    .map_err(|e| format!("reading stdout: {e}"))?;
                let addr = line
                    .trim_end()
                    .strip_prefix("listening on ")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("unexpected first stdout line {line:?}"))?;
                Ok(Server {
                    addr,
                    run: ServerRun::Binary(Box::new((child, stdout))),
                })
            }
        }
    }

    /// Stop the server; the binary must still be running (it did not crash during the run).
    pub(crate) async fn stop(self) -> Result<(), String> {
        match self.run {
            ServerRun::InProcess(task) => {
                task.abort();
                Ok(())
            }
            ServerRun::Binary(run) => {
                let (mut child, _stdout) = *run;
                let crashed = child
                    .try_wait()
                    .map_err(|e| e.to_string())?
                    .map(|status| format!("the server exited during the run: {status}"));
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                crashed.map_or(Ok(()), Err)
            }
        }
    }
}

/// One TCP connection of the in-process server, as `gangway serve` handles it: read the head;
/// an upgrade becomes an echo session, anything else a plain HTTP answer.
async fn serve_connection(tcp: TcpStream) {
    let Ok(incoming) = ServerBuilder::new().read_request(tcp).await else {
        return; // already answered (400/431), or the peer went away
    };
    #[cfg(feature = "http2")]
    if incoming.is_http2_prior_knowledge() {
        // HTTP/2 (RFC 8441): each extended CONNECT stream is an echo session of its own.
        let Ok(mut conn) = incoming.accept_http2().await else {
            return;
        };
        while let Some(Ok(request)) = conn.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = request.accept().await {
                    echo(&mut ws).await;
                }
            });
        }
        return;
    }
    if !incoming.is_upgrade() {
        let status = if incoming.request().uri().path() == "/" {
            200
        } else {
            404
        };
        let response = http::Response::builder()
            .status(status)
            .header("Content-Type", "text/html; charset=utf-8")
            .header("Connection", "close")
            .body(())
            .unwrap_or_default();
        let _ = incoming
            .respond(response, b"<!doctype html><title>echo</title>\n")
            .await;
        return;
    }
    let Ok(mut ws) = incoming.accept().await else {
        return; // already answered
    };
    echo(&mut ws).await;
    linger(ws.get_ref()).await;
}

/// Echo every message until the session ends.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    loop {
        let message = match ws.next().await {
            None => break,
            Some(Err(_)) => {
                drain(ws).await;
                break;
            }
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            Some(Ok(_)) => continue,
        };
        if ws.send(message).await.is_err() {
            drain(ws).await;
            break;
        }
    }
}

/// Keep reading (bounded) after an error so the queued close frame is written.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    let _ = tokio::time::timeout(AFTER_ERROR, async {
        while let Some(item) = ws.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
}

/// Read and discard until the client closes its side (bounded), so that closing the socket does
/// not reset the connection under the close frame we just sent.
async fn linger(tcp: &TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            match tcp.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// How a client run ended.
#[derive(Clone, Debug)]
pub(crate) enum ClientEnd {
    /// The session ended with a clean close (binary: exit status 0, or 57 when the peer's close
    /// code reports a failure).
    Clean(String),
    /// The handshake or the session failed (binary: a failure exit status with a `gangway: `
    /// line).
    Failed(String),
    /// Something else: a crash, a wrong exit status, no exit at all.
    Broken(String),
}

/// A client running against the raw server.
pub(crate) enum Client {
    InProcess(JoinHandle<ClientEnd>),
    Binary(Child, JoinHandle<String>),
}

impl Client {
    /// Start an echo client for `url`, offering `protocols`, over HTTP/2 with `http2`.
    pub(crate) fn start(
        target: &Target,
        url: &str,
        protocols: &[&str],
        http2: bool,
    ) -> Result<Client, String> {
        match target {
            Target::InProcess => {
                let url = url.to_owned();
                let protocols: Vec<String> = protocols.iter().map(|p| (*p).to_owned()).collect();
                Ok(Client::InProcess(tokio::spawn(echo_client(
                    url, protocols, http2,
                ))))
            }
            Target::Binary(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["connect", "--echo", url]);
                if http2 {
                    cmd.arg("--http2");
                }
                for p in protocols {
                    cmd.args(["--protocol", p]);
                }
                let mut child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
                let mut stderr = child.stderr.take().ok_or("no stderr")?;
                let reader = tokio::spawn(async move {
                    let mut text = String::new();
                    let _ = stderr.read_to_string(&mut text).await;
                    text
                });
                Ok(Client::Binary(child, reader))
            }
        }
    }

    /// Wait (at most `limit`) for the client to end.
    pub(crate) async fn finish(self, limit: Duration) -> ClientEnd {
        match self {
            Client::InProcess(task) => match tokio::time::timeout(limit, task).await {
                Ok(Ok(end)) => end,
                Ok(Err(e)) => ClientEnd::Broken(format!("client task failed: {e}")),
                Err(_) => ClientEnd::Broken(format!("client still running after {limit:?}")),
            },
            Client::Binary(mut child, stderr) => {
                let status = tokio::time::timeout(limit, child.wait()).await;
                let status = match status {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return ClientEnd::Broken(format!("wait failed: {e}")),
                    Err(_) => {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                        return ClientEnd::Broken(format!(
                            "`gangway connect` still running after {limit:?}; killed"
                        ));
                    }
                };
                let text = tokio::time::timeout(Duration::from_secs(2), stderr)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let text = text.trim_end().to_owned();
                match status.code() {
                    Some(0) => ClientEnd::Clean(text),
                    // A clean close handshake in which the peer's code reports a failure
                    // (1002-2999): the binary exits 57 to say so, the close itself was clean.
                    Some(57) if text.starts_with("gangway: closed by peer: ") => {
                        ClientEnd::Clean(text)
                    }
                    // The contract: errors are one stderr line starting `gangway: `, with
                    // curl's status for what failed (docs/cli.md, exit codes); against this raw
                    // server: 8 an invalid 101, 22 another status, 28 a timeout, 52 no answer,
                    // 56 a protocol error or a lost connection.
                    Some(8 | 22 | 28 | 52 | 56)
                        if text.starts_with("gangway: ") && !text.contains("panicked") =>
                    {
                        ClientEnd::Failed(text)
                    }
                    _ => ClientEnd::Broken(format!("exit {status}, stderr {text:?}")),
                }
            }
        }
    }
}

/// The in-process echo client, like `gangway connect --echo`: send every text and binary message
/// back until the server closes.
async fn echo_client(url: String, protocols: Vec<String>, http2: bool) -> ClientEnd {
    let mut builder = match ClientBuilder::new(&url) {
        Ok(b) => b,
        Err(e) => return ClientEnd::Broken(format!("bad url: {e}")),
    };
    for p in protocols {
        builder = builder.protocol(p);
    }
    #[cfg(feature = "http2")]
    if http2 {
        return match builder
            .http2(gangway::http2::Http2::Required)
            .connect()
            .await
        {
            Ok((ws, _response)) => echo_session(ws).await,
            Err(e) => ClientEnd::Failed(format!("connect: {}", chain(&e))),
        };
    }
    #[cfg(not(feature = "http2"))]
    if http2 {
        return ClientEnd::Broken("built without the http2 feature".into());
    }
    match builder.connect().await {
        Ok((ws, _response)) => echo_session(ws).await,
        Err(e) => ClientEnd::Failed(format!("connect: {}", chain(&e))),
    }
}

/// Echo until the server closes.
async fn echo_session<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> ClientEnd {
    loop {
        let message = match ws.next().await {
            None => {
                return ClientEnd::Clean(format!("peer close frame {:?}", ws.close_frame()));
            }
            Some(Err(e)) => {
                drain(&mut ws).await;
                return ClientEnd::Failed(chain(&e));
            }
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m,
            Some(Ok(_)) => continue,
        };
        if let Err(e) = ws.send(message).await {
            drain(&mut ws).await;
            return ClientEnd::Failed(format!("echo: {}", chain(&e)));
        }
    }
}

/// An error and its causes on one line.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
