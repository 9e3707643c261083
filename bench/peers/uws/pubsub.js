// Broadcast server on uWebSockets.js (uWS C++ core, Node binding), with its pub/sub: every
// connection subscribes to the topic named by its URL path, and every message it sends is
// published to that topic with `app.publish` (every subscriber, the sender included), which
// uWS frames once per publish and corks per subscriber, one write each per loop iteration.
//
// Configured as echo.js is, so that it does what `gangway serve --broadcast` does in the
// comparison: no compression, no idle timeout or automatic pings, 16 MiB messages allowed, and a
// backpressure limit (--max-backpressure BYTES, default 1 GiB) past which messages to a slow
// subscriber are dropped rather than the connection closed.
//
// Usage: node pubsub.js [--listen] ADDR [--max-backpressure BYTES] (default 127.0.0.1:9001).
// Prints nothing but errors.
//
// UWS_NATIVE may name the binding's native module directly (see scripts/bench-compare.py).
'use strict';
const uWS = process.env.UWS_NATIVE
  ? require(process.env.UWS_NATIVE)
  : require('@btc-vision/uwebsockets.js');

let addr = '127.0.0.1:9001';
let maxBackpressure = 1 << 30;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--listen') addr = args[++i];
  else if (args[i] === '--max-backpressure') maxBackpressure = Number(args[++i]);
  else addr = args[i];
}
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));

const app = uWS.App();
app
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 << 20,
    maxBackpressure,
    closeOnBackpressureLimit: false,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    upgrade: (res, req, context) => {
      res.upgrade(
        { topic: req.getUrl() },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        context,
      );
    },
    open: (ws) => {
      ws.subscribe(ws.getUserData().topic);
    },
    message: (ws, message, isBinary) => {
      app.publish(ws.getUserData().topic, message, isBinary);
    },
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uws-pubsub: cannot listen on ${addr}`);
      process.exit(1);
    }
  });
