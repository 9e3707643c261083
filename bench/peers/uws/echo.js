// WebSocket echo server on uWebSockets.js (uWS C++ core, Node binding), set up as the binding's
// own echo example does: App().ws() with a message handler that sends the message back.
// Differences from the example, so that it does what the other servers of the comparison do:
// no compression, no idle timeout or automatic pings, 16 MiB messages allowed (the default is
// 16 KiB), and a backpressure limit high enough that a pipelined echo is never dropped.
//
// Usage: node echo.js [--listen] ADDR (default 127.0.0.1:9001). Prints nothing but errors.
//
// UWS_NATIVE may name the binding's native module directly (see scripts/bench-compare.py: on a
// glibc older than the prebuilt module needs, a patched copy is loaded from there).
'use strict';
const uWS = process.env.UWS_NATIVE
  ? require(process.env.UWS_NATIVE)
  : require('@btc-vision/uwebsockets.js');

const args = process.argv.slice(2);
const addr = args[0] === '--listen' ? args[1] : args[0] || '127.0.0.1:9001';
const colon = addr.lastIndexOf(':');
const host = addr.slice(0, colon);
const port = Number(addr.slice(colon + 1));

uWS.App()
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 << 20,
    maxBackpressure: 1 << 30,
    closeOnBackpressureLimit: false,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    message: (ws, message, isBinary) => {
      ws.send(message, isBinary);
    },
  })
  .listen(host, port, (token) => {
    if (!token) {
      console.error(`uws-echo: cannot listen on ${addr}`);
      process.exit(1);
    }
  });
