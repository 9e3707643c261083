//! UTF-8 validation of text payloads: `Utf8Validator` fed a whole message, and fed in pieces
//! that cut code points (as network reads do), next to `std::str::from_utf8` and simdutf8's two
//! APIs called directly on the whole buffer. ASCII and mixed multi-byte text, 16 B to 64 KiB.
//!
//! `cargo bench -p gangway-proto --bench utf8`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gangway_proto::utf8::Utf8Validator;

/// Sizes, with the piece size used for the incremental runs: 1460 bytes is a TCP segment's
/// payload on Ethernet; the smaller sizes are cut into a handful of pieces.
const SIZES: [(usize, &str, usize); 3] = [
    (16, "16B", 5),
    (1024, "1KiB", 100),
    (64 * 1024, "64KiB", 1460),
];

/// `sample` repeated to exactly `len` bytes of valid UTF-8 (cut at a code point, ASCII-padded).
fn text(sample: &str, len: usize) -> Vec<u8> {
    let mut out = String::with_capacity(len + sample.len());
    'fill: loop {
        for ch in sample.chars() {
            if out.len() + ch.len_utf8() > len {
                break 'fill;
            }
            out.push(ch);
        }
    }
    while out.len() < len {
        out.push(' ');
    }
    out.into_bytes()
}

const ASCII: &str = "The quick brown fox jumps over the lazy dog; {\"id\": 42, \"ok\": true}\n";
/// Two-, three- and four-byte sequences mixed with ASCII: Latin accents, Greek, Cyrillic, CJK
/// and emoji.
const MIXED: &str = "Grüße, κόσμε! Привет, мир. 你好，世界。 héllo wörld 😀🚀 ✓ done; ";

fn validation(c: &mut Criterion) {
    for (kind, sample) in [("ascii", ASCII), ("mixed", MIXED)] {
        let mut group = c.benchmark_group(format!("utf8_{kind}"));
        for (size, label, piece) in SIZES {
            let input = text(sample, size);
            // Every run below must take the success path, through every piece.
            assert!(std::str::from_utf8(&input).is_ok());
            let mut v = Utf8Validator::new();
            assert!(input.chunks(piece).all(|chunk| v.feed(chunk).is_ok()) && v.finish().is_ok());
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("std", label), &input, |b, input| {
                b.iter(|| std::str::from_utf8(black_box(input)).is_ok())
            });
            group.bench_with_input(
                BenchmarkId::new("simdutf8_basic", label),
                &input,
                |b, input| b.iter(|| simdutf8::basic::from_utf8(black_box(input)).is_ok()),
            );
            group.bench_with_input(
                BenchmarkId::new("simdutf8_compat", label),
                &input,
                |b, input| b.iter(|| simdutf8::compat::from_utf8(black_box(input)).is_ok()),
            );
            group.bench_with_input(
                BenchmarkId::new("validator_whole", label),
                &input,
                |b, input| {
                    b.iter(|| {
                        let mut v = Utf8Validator::new();
                        v.feed(black_box(input)).is_ok() && v.finish().is_ok()
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("validator_pieces_of_{piece}"), label),
                &input,
                |b, input| {
                    b.iter(|| {
                        let mut v = Utf8Validator::new();
                        black_box(input)
                            .chunks(piece)
                            .all(|chunk| v.feed(chunk).is_ok())
                            && v.finish().is_ok()
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, validation);
criterion_main!(benches);
