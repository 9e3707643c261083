//! An axum application serving a page at `/` and a WebSocket echo at `/ws` on one port, the
//! WebSocket accepted by gangway (with its handshake checks and origin policy).
//!
//! ```sh
//! cargo run -p gangway --example axum --features hyper -- 127.0.0.1:3000
//! # then open http://127.0.0.1:3000/
//! ```

use axum::extract::{Request, State};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use gangway::{Message, ServerBuilder};

/// The page: connects back to `/ws`, sends what is typed, shows the echo.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>gangway in axum</title>
<form id="form"><input id="text" autofocus autocomplete="off"> <button>send</button></form>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => log("open");
  ws.onmessage = (e) => log("echo: " + e.data);
  ws.onclose = (e) => log(`closed ${e.code} ${e.reason}`);
  document.getElementById("form").onsubmit = (e) => {
    e.preventDefault();
    const input = document.getElementById("text");
    ws.send(input.value);
    input.value = "";
  };
</script>
"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/", listener.local_addr()?);
    axum::serve(listener, app(ServerBuilder::new())).await
}

/// The routes; `server` decides what the WebSocket handshake accepts.
fn app(server: ServerBuilder) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(ws))
        .with_state(server)
}

/// The WebSocket route: the whole request goes to gangway, which checks it and answers `101`
/// (or the refusal), and hands over the connection once axum has sent that answer.
async fn ws(State(server): State<ServerBuilder>, mut request: Request) -> http::Response<String> {
    match gangway::hyper::upgrade(&mut request, &server) {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                if let Err(e) = echo(pending).await {
                    eprintln!("websocket: {e}");
                }
            });
            response
        }
        Err(refusal) => {
            eprintln!("refused: {refusal}");
            refusal.response()
        }
    }
}

/// Echo every message until the client closes.
async fn echo(pending: gangway::hyper::PendingUpgrade) -> Result<(), gangway::Error> {
    let mut ws = pending.await?;
    while let Some(message) = ws.next().await {
        match message? {
            data @ (Message::Text(_) | Message::Binary(_)) => ws.send(data).await?,
            // Pings are answered by the core; pongs need nothing. Fragments are only delivered
            // when `Config::deliver_fragments` is on.
            Message::Ping(_) | Message::Pong(_) | Message::Fragment(_) => {}
        }
    }
    Ok(())
}
