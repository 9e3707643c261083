//! The core's work per echoed message, without any I/O: a server [`Connection`] is fed batches
//! of masked frames as one read each, every message is echoed back and the output is consumed,
//! as an echo server does per socket read.
//!
//! It only does the work; count it with an instruction counter, which is repeatable where timing
//! is not. Two runs that differ only in the number of batches give the cost per message:
//!
//! ```text
//! cargo build --release -p gangway-proto --example echo_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/echo_cost binary 16 16 1000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/echo_cost binary 16 16 2000
//! ```
//!
//! (instructions of the second run − the first) / (1000 × 16) is the cost of one 16-byte binary
//! echo in batches of 16 (start-up, the connection's first allocations and the input's encoding
//! cancel out). Arguments: `binary|text PAYLOAD_BYTES MESSAGES_PER_BATCH BATCHES [release]`;
//! with `release`, [`Connection::release_buffers`] is called after every batch, as an adapter
//! does when the transport then has nothing to read (request/response traffic). Each batch is
//! first copied into a read buffer, as a read would; with `lend`, it is handed over with
//! [`Connection::receive_buf`] (binary messages are then lent, not copied), as the tokio layer
//! does, instead of borrowed by [`Connection::receive_data`].

use std::hint::black_box;

use bytes::BytesMut;
use std::process::ExitCode;

use gangway_proto::frame::FrameHeader;
use gangway_proto::frame::MAX_HEADER_LEN;
use gangway_proto::{Config, Connection, Event, OpCode, Role, SeededRandom};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, payload, per_batch, batches, options) = match args.as_slice() {
        [k, p, n, b, options @ ..] => (k, p, n, b, options),
        _ => return usage(),
    };
    let mut release = false;
    let mut lend = false;
    for option in options {
        match option.as_str() {
            "release" => release = true,
            "lend" => lend = true,
            _ => return usage(),
        }
    }
    let opcode = match kind.as_str() {
        "binary" => OpCode::Binary,
        "text" => OpCode::Text,
        other => {
            eprintln!("unknown kind {other:?}: binary or text");
            return ExitCode::from(2);
        }
    };
    let (Ok(payload), Ok(per_batch), Ok(batches)) = (
        payload.parse::<usize>(),
        per_batch.parse::<usize>(),
        batches.parse::<u64>(),
    ) else {
        eprintln!("PAYLOAD_BYTES, MESSAGES_PER_BATCH and BATCHES are numbers");
        return ExitCode::from(2);
    };

    let input = batch(opcode, payload, per_batch);
    let mut conn = Connection::with_random(
        Role::Server,
        Config::default(),
        Box::new(SeededRandom::new(1)),
    );
    let mut echoed = 0u64;
    let mut written = 0u64;
    // The read buffer: each batch is copied into it first, as the kernel copies a read (the same
    // work either way, so that it cancels out of a comparison). When lending, the batch is then
    // split off and handed over, as the tokio layer does; otherwise it is borrowed.
    let mut read_buf = BytesMut::new();
    // The core only stores the time it is given: one reading for the whole run.
    let now = std::time::Instant::now();
    for _ in 0..batches {
        if read_buf.capacity() < input.len() {
            read_buf.reserve(READ_SIZE.max(input.len()));
        }
        read_buf.extend_from_slice(black_box(&input));
        if lend {
            conn.receive_buf(read_buf.split(), now);
        } else {
            conn.receive_data(&read_buf, now);
            read_buf.clear();
        }
        loop {
            let event = match conn.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("protocol error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let sent = match event {
                Event::Binary(data) => conn.send_binary(&data),
                Event::Text(text) => conn.send_text(&text),
                other => {
                    eprintln!("unexpected event {other:?}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = sent {
                eprintln!("send failed: {e}");
                return ExitCode::FAILURE;
            }
            echoed += 1;
        }
        // One write takes the whole batch's answers, as a vectored or corked write would.
        let out = black_box(conn.output());
        let n = out.len();
        written += n as u64;
        conn.consume_output(n);
        if release {
            conn.release_buffers();
        }
    }
    let expected = batches * per_batch as u64;
    if echoed != expected {
        eprintln!("echoed {echoed} messages, expected {expected}");
        return ExitCode::FAILURE;
    }
    println!(
        "{kind} {payload} B: {batches} batches of {per_batch} messages, {echoed} echoed, \
         {written} bytes written{}{}",
        if release {
            ", buffers released after each"
        } else {
            ""
        },
        if lend { ", input lent" } else { "" }
    );
    ExitCode::SUCCESS
}

/// The tokio layer's read buffer size.
const READ_SIZE: usize = 256 << 10;

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo_cost binary|text PAYLOAD_BYTES MESSAGES_PER_BATCH BATCHES [release] [lend]"
    );
    ExitCode::from(2)
}

/// `count` masked frames of `len` bytes each, as a client sends them, back to back.
fn batch(opcode: OpCode, len: usize, count: usize) -> Vec<u8> {
    // ASCII, so text is valid UTF-8 whatever the length; varied, so masking is not trivial.
    let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut rng_state = 0x9E37_79B9_u32;
    let mut out = Vec::with_capacity(count * (len + MAX_HEADER_LEN));
    for _ in 0..count {
        rng_state = rng_state
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let key = rng_state.to_le_bytes();
        let header = FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: len as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let head_len = header.encode(&mut head);
        out.extend_from_slice(&head[..head_len]);
        let start = out.len();
        out.extend_from_slice(&payload);
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    out
}
