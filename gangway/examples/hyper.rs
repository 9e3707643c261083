//! A plain hyper 1 server: a page at `/`, a WebSocket echo on any request that asks for one,
//! accepted by gangway.
//!
//! ```sh
//! cargo run -p gangway --example hyper --features hyper -- 127.0.0.1:3000
//! ```

use std::convert::Infallible;

use futures_util::{SinkExt, StreamExt};
use gangway::{Message, ServerBuilder};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    let server = ServerBuilder::new().protocol("echo");
    loop {
        let (tcp, _) = listener.accept().await?;
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(server.clone(), request));
            // `with_upgrades`: without it hyper never hands the connection over after the 101.
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                eprintln!("http: {e}");
            }
        });
    }
}

async fn handle(
    server: ServerBuilder,
    mut request: http::Request<Incoming>,
) -> Result<http::Response<String>, Infallible> {
    if !gangway::hyper::is_upgrade_request(&request) {
        let page = http::Response::builder()
            .header("Content-Type", "text/plain; charset=utf-8")
            .body("Connect a WebSocket client to this address.\n".to_owned());
        // A response with a static header always builds.
        return Ok(page.unwrap_or_default());
    }
    let (response, pending) = match gangway::hyper::upgrade(&mut request, &server) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            eprintln!("refused: {refusal}");
            return Ok(refusal.response());
        }
    };
    tokio::spawn(async move {
        let result: Result<(), gangway::Error> = async {
            let mut ws = pending.await?;
            while let Some(message) = ws.next().await {
                if let data @ (Message::Text(_) | Message::Binary(_)) = message? {
                    ws.send(data).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("websocket: {e}");
        }
    });
    Ok(response)
}
