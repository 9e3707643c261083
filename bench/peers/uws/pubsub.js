// Broadcast server on uWebSockets.js (uWS C++ core, Node binding), with its pub/sub: every
// connection subscribes to the topic named by its URL path, and every message it sends goes to
// every subscriber of that topic, the sender included.
//
// How a message is published (--publish):
//
//   ws  (default) `ws.send(message)` back to the sender, then `ws.publish(topic, message)` to the
//       others: uWS's own broadcast example (`ws.publish` in the message handler) plus the
//       sender's copy.
//   app `app.publish(topic, message)` to every subscriber, the sender included.
//
// Both are what uWS users write, and under a burst they differ tenfold. uWS keeps at most 32
// messages per subscriber between two drains of its topic tree (TopicTree.h); a subscriber
// with more published in one event-loop iteration is drained at once, inside the message
// handler. There the sender's socket holds the loop's single cork buffer (uWS corks a socket
// while its data is handled), so the drained subscriber cannot be corked: each of its messages
// goes out in a send() system call of its own (22-byte writes with 20-byte messages, under
// strace). With `ws`, the `ws.send` first drains the sender's own pending messages through the
// topic tree's drain callback, which ends by uncorking the socket it drained when that socket
// is corked (its "needs uncork" flag, set by an earlier drain, is never cleared: App.h). The
// sender is thus uncorked before `ws.publish`, whose drains then cork each subscriber and write
// up to 32 messages per system call. bench/RESULTS.md ("Broadcast against uWebSockets.js
// publishing the way its examples do") has the measurements; the comparison uses the faster `ws`.
//
// Otherwise configured as echo.js is, so that it does what `gangway serve --broadcast` does in
// the comparison: no idle timeout or automatic pings, 16 MiB messages allowed, and a
// backpressure limit (--max-backpressure BYTES, default 1 GiB) past which messages to a slow
// subscriber are dropped rather than the connection closed. --compression shared turns
// permessage-deflate on with uWS's shared compressor and decompressor (no memory per socket,
// every message compressed on its own: what uWS's documentation advises for JSON) and publishes
// with `compress` set; without it, compression is off.
//
// Usage: node pubsub.js [--listen] ADDR [--max-backpressure BYTES] [--publish ws|app]
//                       [--compression off|shared]     (default 127.0.0.1:9001)
// Prints nothing but errors.
//
// UWS_NATIVE may name the binding's native module directly (see scripts/bench-compare.py).
'use strict';
const uWS = process.env.UWS_NATIVE
  ? require(process.env.UWS_NATIVE)
  : require('@btc-vision/uwebsockets.js');

let addr = '127.0.0.1:9001';
let maxBackpressure = 1 << 30;
let publish = 'ws';
let compression = 'off';
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--listen') addr = args[++i];
  else if (args[i] === '--max-backpressure') maxBackpressure = Number(args[++i]);
  else if (args[i] === '--publish') publish = args[++i];
  else if (args[i] === '--compression') compression = args[++i];
  else addr = args[i];
}
if (!['ws', 'app'].includes(publish) || !['off', 'shared'].includes(compression)) {
  console.error('uws-pubsub: --publish ws|app, --compression off|shared');
  process.exit(2);
}
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));
const compress = compression === 'shared';

const app = uWS.App();
app
  .ws('/*', {
    compression: compress ? uWS.SHARED_COMPRESSOR | uWS.SHARED_DECOMPRESSOR : uWS.DISABLED,
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
      const topic = ws.getUserData().topic;
      if (publish === 'ws') {
        ws.send(message, isBinary, compress);
        ws.publish(topic, message, isBinary, compress);
      } else {
        app.publish(topic, message, isBinary, compress);
      }
    },
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uws-pubsub: cannot listen on ${addr}`);
      process.exit(1);
    }
  });
