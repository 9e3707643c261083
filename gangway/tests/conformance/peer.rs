//! The scripted raw peer: its frame writer (over `gangway-test-support`'s, the one every test
//! shares) and reader, HTTP heads, SHA-1 and base64.
//!
//! Nothing here uses gangway: the suite judges gangway against RFC 6455 as written, so a mistake
//! shared by gangway's encoder and decoder (or its accept-key computation) cannot hide itself.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Frame opcodes (RFC 6455 §5.2).
pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// The GUID of RFC 6455 §1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest HTTP head the peer reads before giving up.
const MAX_HEAD: usize = 64 << 10;

/// The side the raw peer plays. Its frames are masked as the RFC requires of that side (§5.1:
/// a client masks every frame, a server none) unless a frame asks for the opposite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The raw peer is the client: gangway is the server under test.
    Client,
    /// The raw peer is the server: gangway is the client under test.
    Server,
}

/// How a frame's header states its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Length {
    /// The shortest encoding of the real payload length (§5.2).
    Minimal,
    /// A 64-bit length field carrying this value whatever the payload is: hostile headers.
    Announce(u64),
}

/// A frame the peer sends, before encoding.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
    /// Mask as the opposite side would (a server masking, a client not).
    pub(crate) wrong_mask: bool,
    pub(crate) length: Length,
}

impl Frame {
    /// A final frame with `opcode` and `payload`, RSV 0, masked as the side requires.
    pub(crate) fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
            wrong_mask: false,
            length: Length::Minimal,
        }
    }

    pub(crate) fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(TEXT, payload)
    }

    pub(crate) fn binary(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(BINARY, payload)
    }

    pub(crate) fn cont(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(CONTINUATION, payload)
    }

    pub(crate) fn ping(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(PING, payload)
    }

    pub(crate) fn pong(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(PONG, payload)
    }

    /// A close frame with `code` and `reason` (§5.5.1).
    pub(crate) fn close(code: u16, reason: impl AsRef<[u8]>) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_ref());
        Frame::new(CLOSE, payload)
    }

    /// The same frame with FIN as given.
    pub(crate) fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    /// The same frame with the RSV bits (0–7, RSV1 the highest) as given.
    pub(crate) fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }

    /// The same frame, masked as the other side would mask it.
    pub(crate) fn wrong_mask(mut self) -> Frame {
        self.wrong_mask = true;
        self
    }

    /// The same frame with a header announcing `len` payload bytes in a 64-bit length field.
    pub(crate) fn announce(mut self, len: u64) -> Frame {
        self.length = Length::Announce(len);
        self
    }

    /// The header length of this frame when sent by `side` (payload bytes start there).
    pub(crate) fn header_len(&self, side: Side) -> usize {
        self.wire(side, [0; 4]).header_len()
    }

    fn masked_by(&self, side: Side) -> bool {
        (side == Side::Client) != self.wrong_mask
    }

    /// The frame as sent by `side`, masked with `key` if that side masks it.
    fn wire(&self, side: Side, key: [u8; 4]) -> gangway_test_support::Frame<&[u8]> {
        let frame = gangway_test_support::Frame::of(self.opcode, &self.payload[..])
            .fin(self.fin)
            .rsv(self.rsv)
            .mask(self.masked_by(side).then_some(key));
        match self.length {
            Length::Announce(n) => frame.announce(n),
            Length::Minimal => frame,
        }
    }

    /// Append the wire bytes of this frame as sent by `side`, with mask keys from `rng`.
    pub(crate) fn encode(&self, side: Side, rng: &mut Rng, out: &mut Vec<u8>) {
        let key = if self.masked_by(side) {
            rng.next_u32().to_be_bytes()
        } else {
            [0; 4]
        };
        self.wire(side, key).encode_into(out);
    }
}

/// Encode `frames` back to back as sent by `side`.
pub(crate) fn encode_all(frames: &[Frame], side: Side, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.payload.len() + 14).sum());
    for f in frames {
        f.encode(side, rng, &mut out);
    }
    out
}

/// XOR `data` with `key` (§5.3).
pub(crate) use gangway_test_support::apply_mask;

/// A small deterministic generator (xorshift64*) for mask keys, handshake keys and payloads.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A frame as received from gangway, unmasked.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) fin: bool,
    pub(crate) rsv: u8,
    pub(crate) opcode: u8,
    pub(crate) masked: bool,
    pub(crate) payload: Vec<u8>,
}

/// What the reader task reports, in order.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(Received),
    /// The TCP connection was closed by gangway (FIN).
    Eof,
    /// The connection broke (reset), or gangway sent bytes that are not a frame.
    Broken(String),
}

/// Read frames from `read` (after `leftover`, bytes already read behind the HTTP head) until EOF
/// or an error, reporting each on the returned channel. The task ends when the channel is dropped.
pub(crate) fn spawn_reader<R>(read: R, leftover: Vec<u8>) -> mpsc::UnboundedReceiver<Incoming>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = FrameReader {
            read,
            buf: leftover,
            pos: 0,
        };
        loop {
            let item = match reader.next_frame().await {
                Ok(Some(frame)) => Incoming::Frame(frame),
                Ok(None) => Incoming::Eof,
                Err(e) => Incoming::Broken(e),
            };
            let last = !matches!(item, Incoming::Frame(_));
            if tx.send(item).is_err() || last {
                return;
            }
        }
    });
    rx
}

struct FrameReader<R> {
    read: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Make at least `n` unread bytes available. `Ok(false)`: EOF before any byte of them.
    async fn fill(&mut self, n: usize) -> Result<bool, String> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        while self.buf.len() - self.pos < n {
            let mut chunk = [0u8; 16 << 10];
            let got = self
                .read
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if got == 0 {
                if self.buf.len() == self.pos {
                    return Ok(false);
                }
                return Err(format!(
                    "connection closed inside a frame ({} bytes of it received)",
                    self.buf.len() - self.pos
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(true)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    async fn next_frame(&mut self) -> Result<Option<Received>, String> {
        if !self.fill(2).await? {
            return Ok(None);
        }
        let h = self.take(2);
        let (b0, b1) = (h[0], h[1]);
        let len = match b1 & 0x7F {
            126 => {
                self.fill(2).await?;
                let b = self.take(2);
                u64::from(u16::from_be_bytes([b[0], b[1]]))
            }
            127 => {
                self.fill(8).await?;
                let mut b = [0u8; 8];
                b.copy_from_slice(self.take(8));
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        // Gangway's messages in this suite stay far below this; more is a broken header.
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= 1 << 30)
            .ok_or_else(|| format!("frame header announces {len} bytes"))?;
        let masked = b1 & 0x80 != 0;
        let key = if masked {
            self.fill(4).await?;
            let k = self.take(4);
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        // Payload: what is buffered, then straight from the socket.
        let buffered = (self.buf.len() - self.pos).min(len);
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(self.take(buffered));
        if payload.len() < len {
            let start = payload.len();
            payload.resize(len, 0);
            self.read
                .read_exact(&mut payload[start..])
                .await
                .map_err(|e| format!("read failed inside a {len}-byte payload: {e}"))?;
        }
        if let Some(key) = key {
            apply_mask(&mut payload, key);
        }
        Ok(Some(Received {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0xF,
            masked,
            payload,
        }))
    }
}

/// An HTTP/1.1 head: its first line and its header lines in order.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) start_line: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    /// Parse a head (everything through the blank line).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "head is not utf-8".to_owned())?;
        let mut lines = text.split("\r\n");
        let start_line = lines.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Head {
            start_line,
            headers,
        })
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`, if there is exactly one.
    pub(crate) fn one(&self, name: &str) -> Option<&str> {
        match self.all(name).as_slice() {
            [v] => Some(v),
            _ => None,
        }
    }

    /// Whether the comma-separated token lists of `name` contain `token` (case-insensitive).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The status code of a response head.
    pub(crate) fn status(&self) -> Option<u16> {
        let mut parts = self.start_line.split(' ');
        let version = parts.next()?;
        if !version.starts_with("HTTP/") {
            return None;
        }
        parts.next()?.parse().ok()
    }
}

/// Read an HTTP head from `read` within `limit`: (the head bytes, bytes read after it).
/// `Ok(None)` when the connection closed before any byte arrived.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    read: &mut R,
    limit: Duration,
) -> Result<Option<(Vec<u8>, Vec<u8>)>, String> {
    let mut buf = Vec::new();
    let work = async {
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let rest = buf.split_off(end + 4);
                return Ok(Some((buf, rest)));
            }
            if buf.len() > MAX_HEAD {
                return Err(format!("no end of head within {MAX_HEAD} bytes"));
            }
            let mut chunk = [0u8; 4096];
            let n = read
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read failed during the head: {e}"))?;
            if n == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Err(format!(
                    "connection closed inside the head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| format!("no complete head within {limit:?}"))?
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Sec-WebSocket-Accept` for `key` (§4.2.2 item 5.4): base64(SHA-1(key + GUID)).
pub(crate) fn accept_for(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(GUID.as_bytes());
    base64_encode(&sha1(&input))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard padded base64; `None` if it is not exactly that.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let mut n = 0u32;
        let mut pad = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' && last && i >= 2 {
                pad += 1;
                0
            } else if pad > 0 {
                return None;
            } else {
                B64.iter().position(|&x| x == c)? as u32
            };
            n = n << 6 | v;
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// SHA-1 (FIPS 180-4), only for the accept key.
pub(crate) fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// The peer's own tools checked against published vectors, so the suite's verdicts rest on
/// something known to be right.
pub(crate) fn self_check() {
    // RFC 6455 §1.3 and §4.2.2.
    assert_eq!(
        accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(
        accept_for("08kp54j1E3z4IfuM1m75tQ=="),
        "Dhg2s/gXkbuTiYk690dns7LmEhY="
    );
    // FIPS 180 "abc".
    assert_eq!(
        sha1(b"abc"),
        [
            0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
            0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
        ]
    );
    for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
        let enc = base64_encode(s.as_bytes());
        assert_eq!(base64_decode(&enc).as_deref(), Some(s.as_bytes()), "{s}");
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_decode("Zm9=YmFy"), None);
    // RFC 6455 §5.7: a masked "Hello" from a client.
    let mut frame = Vec::new();
    let mut rng = Rng::new(1);
    Frame::text("Hello").encode(Side::Server, &mut rng, &mut frame);
    assert_eq!(frame, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    let mut payload = *b"Hello";
    apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    let mut long = vec![0x5a; 21];
    apply_mask(&mut long, [1, 2, 3, 4]);
    let scalar: Vec<u8> = (0..21).map(|i| 0x5a ^ [1, 2, 3, 4][i % 4]).collect();
    assert_eq!(long, scalar);
}
