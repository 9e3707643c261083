#!/usr/bin/env bash
# Build every cargo-fuzz target of fuzz/ and run each for a bounded time; exit non-zero if any
# target crashes, hangs or fails its oracle.
#
#   scripts/fuzz.sh [SECONDS]       seconds per target (default: $FUZZ_SECONDS, else 60)
#   FUZZ_TARGETS="utf8 mask"        only these targets (default: all of `cargo fuzz list`)
#
# Each target runs on a copy of its committed seeds (fuzz/corpus/<target>) in a temporary
# directory, so the committed corpus never grows. A crashing input is kept in
# fuzz/artifacts/<target>/ (ignored by git) and printed with the command that replays it.
#
# Toolchain: cargo-fuzz needs nightly compiler flags. With a nightly toolchain installed by rustup
# it uses `cargo +nightly fuzz`; otherwise the default (stable) toolchain with RUSTC_BOOTSTRAP=1.
# cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when missing (a few minutes).
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

secs=${1:-${FUZZ_SECONDS:-60}}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: SECONDS must be a positive integer, got '$secs'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi

if command -v rustup >/dev/null 2>&1 &&
    # Not `grep -q`: it may stop reading early and, with pipefail, fail the pipeline.
    rustup toolchain list 2>/dev/null | grep '^nightly' >/dev/null &&
    cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    toolchain="nightly ($(cargo +nightly --version))"
else
    # cargo-fuzz passes -Z flags (sanitizer, coverage), which stable accepts only this way.
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    toolchain="stable with RUSTC_BOOTSTRAP=1 ($(cargo --version))"
fi
echo "fuzz.sh: $("${fuzz[@]}" --version), $toolchain, ${secs}s per target"

if [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <("${fuzz[@]}" list --fuzz-dir fuzz)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

# Built once, then the binaries run directly: `cargo fuzz run` would rebuild before each target.
# Debug assertions (and so overflow checks) stay on: an overflow is a bug the oracle should see.
# AddressSanitizer (cargo-fuzz's default) watches the unsafe code of the dependencies.
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir="$ROOT/fuzz/target"
echo "fuzz.sh: building every fuzz target"
"${fuzz[@]}" build --fuzz-dir fuzz --debug-assertions --target "$triple" --target-dir "$target_dir"
bin_dir="$target_dir/$triple/release"
# What `cargo fuzz run` sets for AddressSanitizer.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"

work=$(mktemp -d "${TMPDIR:-/tmp}/gangway-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=()
for target in "${targets[@]}"; do
    seeds="$ROOT/fuzz/corpus/$target"
    [ -d "$seeds" ] || { echo "fuzz.sh: no seed corpus at fuzz/corpus/$target" >&2; exit 1; }
    corpus="$work/corpus/$target"
    mkdir -p "$corpus" "$ROOT/fuzz/artifacts/$target"
    cp -R "$seeds/." "$corpus/"
    log="$work/$target.log"
    dict=()
    if [ -f "$ROOT/fuzz/dict/$target.dict" ]; then
        dict=("-dict=$ROOT/fuzz/dict/$target.dict")
    fi
    status=0
    # -timeout: one input running for 10 s is a hang, reported like a crash.
    [ -x "$bin_dir/$target" ] || { echo "fuzz.sh: $bin_dir/$target was not built" >&2; exit 1; }
    "$bin_dir/$target" "$corpus" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$ROOT/fuzz/artifacts/$target/" "${dict[@]}" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 | grep -Eo '[0-9]+' || true)
    entries=$(find "$corpus" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status)"
        failed+=("$target")
    fi
    printf 'fuzz %-20s runs %10s  exec/s %7s  cov %5s  corpus %5s  %s\n' \
        "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "$entries" "$result"
    if [ "$status" -ne 0 ]; then
        {
            # The panic and the top of its backtrace, or else the end of the log (a build error,
            # a hang, a leak, running out of memory).
            if grep -q 'panicked at' "$log"; then
                grep -m 1 -A 14 'panicked at' "$log"
            else
                tail -n 30 "$log"
            fi
            grep -E '^(SUMMARY|Test unit written to)' "$log" || true
        } >&2
        artifact=$(grep -Eo "$ROOT/fuzz/artifacts/$target/[^ ]+" "$log" | tail -n 1 || true)
        if [ -n "$artifact" ]; then
            echo "fuzz.sh: replay with: $bin_dir/$target $artifact" >&2
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all ${#targets[@]} targets ran ${secs}s each without a failure"
