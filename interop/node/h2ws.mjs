// A minimal RFC 6455 frame codec for WebSockets over Node's built-in `http2` module (RFC 8441):
// `ws` speaks HTTP/1.1 only, so the frames on an HTTP/2 stream are written and read here, from
// the RFC, independently of gangway. Not a test file itself (`node --test` only picks up
// `*.test.mjs`).

import { randomBytes } from 'node:crypto';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };

/** One frame, FIN set; masked with a fresh key when `mask` (a client's frames, RFC 6455 §5.3). */
export function encodeFrame(opcode, payload, { mask = false, fin = true } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = data.length;
  const extra = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + extra + (mask ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (extra === 2) head.writeUInt16BE(len, 2);
  if (extra === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, data]);
  const key = randomBytes(4);
  key.copy(head, 2 + extra);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = data[i] ^ key[i & 3];
  return Buffer.concat([head, body]);
}

/** A close frame's payload: the code, then the UTF-8 reason (§5.5.1). */
export function closePayload(code, reason = '') {
  const r = Buffer.from(reason, 'utf8');
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/**
 * Incremental decoder. `feed(chunk)` returns the complete frames `{ fin, opcode, masked, payload }`
 * (unmasked), keeping a partial frame for the next chunk. `expectMasked` is what the peer's role
 * requires (§5.1): a frame that breaks it throws.
 */
export class FrameDecoder {
  #buf = Buffer.alloc(0);

  constructor({ expectMasked }) {
    this.expectMasked = expectMasked;
  }

  feed(chunk) {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    const frames = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const masked = (b[1] & 0x80) !== 0;
      let len = b[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      const keyAt = at;
      if (masked) at += 4;
      if (b.length < at + len) break;
      if (masked !== this.expectMasked) {
        throw new Error(`frame masking is ${masked}, the peer's role requires ${this.expectMasked}`);
      }
      let payload = Buffer.from(b.subarray(at, at + len));
      if (masked) {
        const key = b.subarray(keyAt, keyAt + 4);
        for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
      }
      frames.push({ fin: (b[0] & 0x80) !== 0, opcode: b[0] & 0x0f, masked, payload });
      this.#buf = b.subarray(at + len);
    }
    return frames;
  }
}

/**
 * Whole messages from frames, for a test: reassembles fragments and returns
 * `{ opcode, payload }` for each data message and each control frame.
 */
export class Messages {
  #parts = [];
  #opcode = null;

  push(frame) {
    if (frame.opcode >= 8) return { opcode: frame.opcode, payload: frame.payload };
    if (frame.opcode !== OP.CONT) this.#opcode = frame.opcode;
    this.#parts.push(frame.payload);
    if (!frame.fin) return null;
    const message = { opcode: this.#opcode, payload: Buffer.concat(this.#parts) };
    this.#parts = [];
    return message;
  }
}
