//! WebSocket echo server on fastwebsockets, set up as its own echo example does: hyper's HTTP/1
//! server answers the upgrade (`fastwebsockets::upgrade`), each WebSocket runs in its own
//! unconstrained task, wrapped in a `FragmentCollector` so every frame read is a whole message.
//! Auto-close and auto-pong (the library's defaults, set explicitly here) answer Close and Ping.
//!
//! Usage: `fastwebsockets-echo [--listen] ADDR` (default 127.0.0.1:9001). Prints nothing but
//! errors.

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(listen_addr()).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        // The load generator does not time Nagle's delays; every server here disables it.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = http1::Builder::new()
                .serve_connection(io, service_fn(server_upgrade))
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("fastwebsockets-echo: http: {e}");
            }
        });
    }
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(tokio::task::unconstrained(async move {
        match echo(fut).await {
            // A client that vanishes without a close handshake is routine under a load generator.
            Ok(()) | Err(WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF) => {}
            Err(WebSocketError::IoError(_)) => {}
            Err(e) => eprintln!("fastwebsockets-echo: {e}"),
        }
    }));
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

/// `--listen ADDR` or a positional `ADDR`.
fn listen_addr() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, addr] if flag == "--listen" => addr.clone(),
        [addr] => addr.clone(),
        _ => "127.0.0.1:9001".to_string(),
    }
}
