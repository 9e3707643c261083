//! Giving memory freed after a wave of traffic back to the system (`serve`, glibc only).
//!
//! An idle connection holds no buffer (the tokio layer gives them back as soon as it goes idle),
//! but glibc's allocator keeps what was freed: after thousands of connections each carried a
//! large message at about the same time, the process's resident memory stays as high as that
//! wave made it. It returns free memory by itself only from the top of the heap, and none from
//! the middle, where long-lived allocations made during the wave pin it. `malloc_trim` gives back
//! every free page, wherever it is. [`trim_when_quiet`] calls it once free memory has piled up
//! and stopped being reused: measured with 10,000 connections that each echoed one 64 KiB message
//! (`scripts/bench-compare.py --memory-only`), resident memory went back from 1.3 KiB per
//! connection to what the idle connections had held before.
//!
//! This is the only `unsafe` code of the command-line tool: two calls into the C library.

use std::time::Duration;

/// How often free memory is looked at.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Free memory worth giving back: below this, trimming would mostly give back pages the next
/// burst takes again.
const MIN_FREE: usize = 1 << 20;

/// Free memory that moved by less than this between two looks is settled: the traffic that
/// freed it is over, and nothing is taking it back.
const SETTLED: usize = 256 << 10;

/// Look at the allocator's free memory every [`CHECK_EVERY`] and give it back to the system once
/// it has settled (see [`SETTLED`]), is at least [`MIN_FREE`] and an eighth of the heap, and has
/// grown by [`SETTLED`] since the last trim. Trimming leaves the free memory free (its pages go
/// back to the system, the allocator keeps the chunks), so a level that stays the same is not
/// trimmed again. Runs until dropped; costs a walk of the allocator's free lists every 100 ms.
pub(crate) async fn trim_when_quiet() {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_free = 0;
    // The free memory left by the last trim (whose pages went back already).
    let mut trimmed_free = 0;
    loop {
        ticks.tick().await;
        let Some(now) = usage() else {
            return;
        };
        let settled = now.free.abs_diff(last_free) < SETTLED;
        last_free = now.free;
        trimmed_free = trimmed_free.min(now.free);
        if settled
            && now.free >= MIN_FREE
            && now.free >= (now.free + now.used) / 8
            && now.free >= trimmed_free + SETTLED
        {
            trim();
            trimmed_free = now.free;
            tracing::debug!(free = now.free, used = now.used, "heap trimmed");
        }
    }
}

/// Bytes the allocator holds for the program (`used`) and holds free (`free`).
#[derive(Clone, Copy, Debug)]
struct Usage {
    used: usize,
    free: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn usage() -> Option<Usage> {
    // SAFETY: `mallinfo2` (glibc 2.33) takes no argument, only reads the allocator's state under
    // its own locks, and returns a plain struct by value.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    Some(Usage {
        // Allocated from the heap, and in chunks mapped on their own.
        used: info.uordblks + info.hblkhd,
        free: info.fordblks,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn usage() -> Option<Usage> {
    // Other allocators give memory back by themselves, or not through this call.
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: `malloc_trim` takes a byte count to leave at the top of the heap (0: none), works
    // under the allocator's own locks, and only gives back pages that hold no allocation.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process's resident memory, from the kernel.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_kib() -> usize {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn free_memory_is_seen_and_given_back() {
        // 64 MiB in blocks below glibc's mmap threshold, so that they come from the heap, each
        // followed by a small block that stays, as long-lived allocations made during a wave of
        // traffic do: freeing the large ones leaves them in the middle of the heap.
        let mut blocks = Vec::new();
        let mut pins = Vec::new();
        for _ in 0..1024 {
            blocks.push(vec![1u8; 64 << 10]);
            pins.push(vec![2u8; 64]);
        }
        let busy = usage().unwrap();
        let busy_resident = resident_kib();
        drop(blocks);
        let freed = usage().unwrap();
        // The allocator no longer counts them as used.
        assert!(
            busy.used >= freed.used + (60 << 20),
            "{busy:?} then {freed:?}"
        );
        let before = resident_kib();
        trim();
        let after = resident_kib();
        // Once trimmed, the bulk has left the process. (Other tests run at the same time and
        // allocate a little.)
        assert!(
            busy_resident >= after + (48 << 10),
            "resident {busy_resident} KiB in use, {after} KiB after the free and the trim"
        );
        // What the allocator held free went back with the trim. glibc may give part of it back
        // by itself on the free, when blocks border the top of a heap: how much depends on which
        // arena this test's thread got and what the other tests left in it (once a third of it,
        // in CI). What it still held free is what the trim must give back.
        let held = freed.free >> 10;
        assert!(
            before + (16 << 10) >= after + held,
            "{freed:?}: resident {before} KiB before the trim, {after} KiB after"
        );
        assert!(pins.iter().all(|pin| pin[0] == 2), "what is in use stays");
    }
}
