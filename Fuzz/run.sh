#!/usr/bin/env bash
# Builds the libFuzzer target for the HTTP/1.1 request parser and runs it for a bounded time.
#
#   Fuzz/run.sh [SECONDS]      fuzz for SECONDS (default 60)
#   Fuzz/run.sh FILE...        run the target once on each FILE (reproduce a crash)
#
# Exits non-zero when the fuzzer finds a crash, an invariant violation, a timeout or a leak;
# the reproducer is written to Fuzz/.out/crashes/ (see Fuzz/README.md).
# Environment: FUZZ_VERBOSE=1 streams libFuzzer's log; SWIFTC overrides the compiler;
# FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS='-seed=1').
set -euo pipefail

SECS=60
REPRO=()
if [ $# -ge 1 ] && [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ]; then
    SECS="$1"
elif [ $# -ge 1 ] && [ -f "$1" ]; then
    for f in "$@"; do
        [ -f "$f" ] || { echo "fuzz: no such file: $f" >&2; exit 2; }
        REPRO+=("$(readlink -f "$f")")
    done
elif [ $# -ge 1 ]; then
    echo "usage: $0 [SECONDS] | $0 FILE..." >&2
    exit 2
fi

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$FUZZ_DIR")"
OUT="$FUZZ_DIR/.out"
BIN="$OUT/http-parser-fuzz"
CORPUS="$FUZZ_DIR/corpus"
SEEDS="$FUZZ_DIR/seeds"
DICT="$FUZZ_DIR/http.dict"
LOG="$OUT/last-run.log"
SOURCES=(
    "$ROOT/Sources/ApusHTTP/HTTPRequestParser.swift"
    "$ROOT/Sources/ApusHTTP/HTTPTypes.swift"
    "$ROOT/Sources/ApusHTTP/HTTPParseError.swift"
    "$FUZZ_DIR/HTTPParserFuzz.swift"
)
# HTTPTypes.swift names HTTPBodyWriter (declared next to the connection code): stub it while the
# parser's own files do not declare it.
if grep -q 'HTTPBodyWriter' "${SOURCES[@]:0:3}" && ! grep -q 'class HTTPBodyWriter' "${SOURCES[@]:0:3}"; then
    SOURCES+=("$FUZZ_DIR/Stubs.swift")
fi

SWIFTC="${SWIFTC:-$(command -v swiftc || true)}"
[ -n "$SWIFTC" ] || SWIFTC=/opt/swift/usr/bin/swiftc
if [ ! -x "$SWIFTC" ]; then
    echo "fuzz: swiftc not found (looked on PATH and at /opt/swift/usr/bin/swiftc)" >&2
    exit 2
fi

# -sanitize=fuzzer links libclang_rt.fuzzer from the toolchain's own clang resource directory
# (<toolchain>/usr/lib/swift/clang -> ../clang/<N>); Swift.org toolchains ship it. A distribution
# package such as Debian's libclang-rt-<N>-dev installs into /usr/lib/llvm-<N>, which swiftc does
# not search, and its LLVM version would not match the toolchain's anyway, so there is no
# package to install: without the runtime we stop with a clear message.
TOOLCHAIN_USR="$(cd "$(dirname "$(readlink -f "$SWIFTC")")/.." && pwd)"
if ! compgen -G "$TOOLCHAIN_USR/lib/swift/clang/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null \
    && ! compgen -G "$TOOLCHAIN_USR/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null; then
    echo "fuzz: this Swift toolchain ($TOOLCHAIN_USR) has no libclang_rt.fuzzer runtime, so" >&2
    echo "      'swiftc -sanitize=fuzzer' cannot link; use a Swift.org Linux toolchain" >&2
    exit 2
fi

mkdir -p "$OUT/crashes" "$CORPUS"

needs_build=0
[ -x "$BIN" ] || needs_build=1
for src in "${SOURCES[@]}" "${BASH_SOURCE[0]}"; do
    if [ "$src" -nt "$BIN" ]; then needs_build=1; fi
done
if [ "$needs_build" = 1 ]; then
    echo "fuzz: compiling $(basename "$BIN") ..."
    LINKER=()
    # lld avoids a screenful of harmless ld.gold warnings about ASan's local symbols.
    [ -x "$TOOLCHAIN_USR/bin/ld.lld" ] && LINKER=(-use-ld=lld)
    "$SWIFTC" -O -sanitize=fuzzer,address -parse-as-library -swift-version 6 \
        -module-name HTTPParserFuzz "${LINKER[@]}" \
        "${SOURCES[@]}" -o "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
fi

# libFuzzer handles the trap of a failed precondition itself. Swift's own crash handler must stay
# off: under ASan its memory reader trips a (false) heap-buffer-overflow report and the
# swift-backtrace helper it spawns can hang.
export SWIFT_BACKTRACE=enable=no

if [ ${#REPRO[@]} -gt 0 ]; then
    "$BIN" -timeout=10 "${REPRO[@]}"
    exit $?
fi

ARGS=(
    -max_total_time="$SECS"
    -max_len=4096
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
    -artifact_prefix="$OUT/crashes/"
)
[ -f "$DICT" ] && ARGS+=(-dict="$DICT")
# shellcheck disable=SC2206
ARGS+=(${FUZZ_ARGS:-})

echo "fuzz: running $(basename "$BIN") for ${SECS}s (corpus $CORPUS, seeds $SEEDS)"
start=$(date +%s.%N)
set +e
if [ "${FUZZ_VERBOSE:-0}" = 1 ]; then
    "$BIN" "${ARGS[@]}" "$CORPUS" "$SEEDS" 2>&1 | tee "$LOG"
    rc=${PIPESTATUS[0]}
else
    "$BIN" "${ARGS[@]}" "$CORPUS" "$SEEDS" >"$LOG" 2>&1
    rc=$?
fi
set -e
end=$(date +%s.%N)

final_stat() { sed -n "s/^stat::$1: *//p" "$LOG" | tail -1; }
execs="$(final_stat number_of_executed_units)"
rate="$(final_stat average_exec_per_sec)"
units="$(ls "$CORPUS" | wc -l)"
elapsed="$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')"

if [ "$rc" -ne 0 ]; then
    [ "${FUZZ_VERBOSE:-0}" = 1 ] || tail -n 60 "$LOG" >&2
    artifact="$(sed -n "s/.*Test unit written to //p" "$LOG" | tail -1)"
    echo "fuzz: FAILED (exit $rc) after ${execs:-?} executions in ${elapsed}s;" \
        "reproducer: ${artifact:-none}; full log: $LOG" >&2
    [ -n "$artifact" ] && echo "fuzz: reproduce with: $0 $artifact" >&2
    exit "$rc"
fi
echo "fuzz: OK: ${execs:-?} executions in ${elapsed}s (${rate:-?} exec/s), no crash; corpus ${units} units"
