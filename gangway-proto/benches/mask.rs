//! Masking throughput (RFC 6455 §5.3): the byte-at-a-time reference, the portable chunked loop,
//! and `apply_mask` (which takes the AVX2 path on CPUs that have it), at 16 B to 1 MiB, at a
//! 64-byte-aligned start and one byte past it; and a plain copy of the same buffer for reference,
//! the speed that "masking at memory speed" means.
//!
//! `cargo bench -p gangway-proto --bench mask`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gangway_proto::frame::mask::{apply_mask, apply_mask_portable, apply_mask_scalar};

const SIZES: [(usize, &str); 4] = [
    (16, "16B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// What `apply_mask` runs on this machine, for the benchmark's name.
fn dispatch_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        return "apply_mask_avx2";
    }
    "apply_mask_portable_only"
}

/// A buffer with room to start `len` bytes at a 64-byte boundary plus `misalign`.
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buffer {
    fn new(len: usize, misalign: usize) -> Self {
        let bytes: Vec<u8> = (0..len + 128).map(|i| (i * 7 + 3) as u8).collect();
        let start = bytes.as_ptr().align_offset(64) + misalign;
        Self { bytes, start, len }
    }

    fn slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

type MaskFn = fn(&mut [u8], [u8; 4], usize) -> usize;

fn masking(c: &mut Criterion) {
    let implementations: [(&str, MaskFn); 3] = [
        ("bytewise_reference", apply_mask_scalar),
        ("portable", apply_mask_portable),
        (dispatch_name(), apply_mask),
    ];
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        for (name, mask) in implementations {
            // Aligned start, key offset 0; then one byte past the boundary with key offset 3,
            // as when a payload follows a 2-, 4- or 10-byte header and arrives in pieces.
            for (misalign, offset, suffix) in [(0, 0, ""), (1, 3, "_unaligned")] {
                if size < 1024 && misalign != 0 {
                    continue;
                }
                let mut buf = Buffer::new(size, misalign);
                group.bench_function(BenchmarkId::new(format!("{name}{suffix}"), label), |b| {
                    b.iter(|| mask(black_box(buf.slice()), black_box(KEY), black_box(offset)))
                });
            }
        }
    }
    group.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    for (size, label) in SIZES.into_iter().skip(2) {
        group.throughput(Throughput::Bytes(size as u64));
        let src = Buffer::new(size, 0);
        let mut dst = Buffer::new(size, 0);
        let from = &src.bytes[src.start..src.start + size];
        group.bench_function(BenchmarkId::new("copy_from_slice", label), |b| {
            b.iter(|| dst.slice().copy_from_slice(black_box(from)))
        });
    }
    group.finish();
}

criterion_group!(benches, masking, memcpy);
criterion_main!(benches);
