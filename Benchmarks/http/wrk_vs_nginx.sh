#!/usr/bin/env bash
# Apus's HTTP server against nginx, side by side, on the same machine and the same request:
# keep-alive `GET /health` answered with a 15-byte JSON body, driven by wrk.
#
#   Benchmarks/http/wrk_vs_nginx.sh            # or: make bench-http
#   RUNS=5 DURATION=20s Benchmarks/http/wrk_vs_nginx.sh
#
# Runs are interleaved (nginx, apus, nginx, apus, ...) so that drifts of the machine hit both alike.
# wrk, nginx and apus share the same cores; that is the same for both servers. The table reports,
# per run, the CPU each server and wrk took, and how busy the rest of the machine was.
#
# Environment (defaults in brackets):
#   RUNS [3]  DURATION [10s]  THREADS [2]  CONNECTIONS [64]  WARMUP [3s]
#   NGINX_PORT [18481]  APUS_PORT [18482]  APUS_BIN [<repo>/.build/release/apus]
#   APUS_ARGS [empty]  extra arguments to `apus serve` (it runs from the repository root)
#   OUT_DIR [unset]  when set, the raw wrk outputs, configs and the report are kept there.
#   BUSY_LIMIT [25]  % of one core used by other processes above which a run is flagged as noisy.
#   QUIET_WAIT [60]  before each run, wait up to this many seconds for the rest of the machine to
#                    use less than BUSY_LIMIT (0: do not wait).
#
# Exit status: 0 when every run answered only 2xx/3xx without socket errors, 1 when a run did not,
# 2 on set-up failure.

set -Eeuo pipefail

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
WARMUP=${WARMUP:-3s}
NGINX_PORT=${NGINX_PORT:-18481}
APUS_PORT=${APUS_PORT:-18482}
BUSY_LIMIT=${BUSY_LIMIT:-25}
QUIET_WAIT=${QUIET_WAIT:-60}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
APUS_BIN=${APUS_BIN:-$ROOT/.build/release/apus}
[[ $APUS_BIN == /* ]] || APUS_BIN=$PWD/$APUS_BIN
APUS_ARGS=${APUS_ARGS:-}
OUT_DIR=${OUT_DIR:-}

die() { echo "wrk_vs_nginx: $*" >&2; exit 2; }
log() { echo "wrk_vs_nginx: $*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer (got '$RUNS')"

# ---------------------------------------------------------------------------------------------
# Tools: install wrk and nginx only when missing.

find_nginx() {
    command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true
}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ -n $(find_nginx) ]] || missing+=(nginx)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) == 0 ]] || SUDO=sudo
    pkgs=()
    for m in "${missing[@]}"; do
        if [[ $m == nginx ]]; then
            # nginx-light where the distribution still has it, else nginx.
            if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
        else
            pkgs+=("$m")
        fi
    done
    log "installing: ${pkgs[*]}"
    $SUDO apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; then
        # nginx-light may be a virtual or removed package: fall back to nginx.
        pkgs=("${pkgs[@]/nginx-light/nginx}")
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
    fi
fi
NGINX=$(find_nginx)
[[ -n $NGINX ]] || die "nginx not found after installation"
command -v wrk >/dev/null 2>&1 || die "wrk not found after installation"
[[ -x $APUS_BIN ]] || die "$APUS_BIN not found: build it first (make build)"

CORES=$(nproc)
CLK_TCK=$(getconf CLK_TCK)

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$NGINX_PORT" "$APUS_PORT"; do
    ! port_in_use "$p" || die "port $p is already in use (set NGINX_PORT / APUS_PORT)"
done

# ---------------------------------------------------------------------------------------------
# Servers, and their clean-up on any exit.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/wrk_vs_nginx.XXXXXX")
NGINX_PID=""
APUS_PID=""

stop_pid() {  # pid signal: signal, wait up to 5 s, then SIGKILL
    local pid=$1 sig=$2 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$APUS_PID" TERM
    stop_pid "$NGINX_PID" QUIT  # graceful: the master stops its workers
    if [[ -n $OUT_DIR ]]; then
        mkdir -p "$OUT_DIR"
        cp -r "$WORK"/. "$OUT_DIR"/ 2>/dev/null || true
        rm -rf "$OUT_DIR/nginx/tmp"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "failed (status $?) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# nginx: a minimal configuration of its own, everything under $WORK/nginx.
mkdir -p "$WORK/nginx/tmp" "$WORK/nginx/logs"
temp_paths="client_body_temp_path $WORK/nginx/tmp/body;"
for m in proxy fastcgi uwsgi scgi; do
    # Only the modules compiled in accept their *_temp_path directive.
    "$NGINX" -V 2>&1 | grep -q -- "--without-http_${m}_module" || temp_paths+=$'\n'"    ${m}_temp_path $WORK/nginx/tmp/$m;"
done
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $CORES;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    $temp_paths
    keepalive_timeout 75s;
    # Apus keeps a connection for any number of requests; nginx's default (1000) would make
    # wrk reconnect every 1000 requests, so lift it for a like-for-like comparison.
    keepalive_requests 1000000000;

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /health {
            default_type application/json;
            return 200 '{"status":"ok"}';
        }
    }
}
EOF
"$NGINX" -t -q -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" \
    || die "nginx rejects its configuration: $(cat "$WORK/nginx/logs/error.log" 2>/dev/null)"
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!

# From the repository root: apus finds its default model files (Models/cache/...) relative to it.
# shellcheck disable=SC2086  # APUS_ARGS is a list of words
(cd "$ROOT" && exec "$APUS_BIN" serve --host 127.0.0.1 --port "$APUS_PORT" --log-level warning $APUS_ARGS) \
    >"$WORK/apus.log" 2>&1 &
APUS_PID=$!

wait_healthy() {  # name url pid
    local i
    for ((i = 0; i < 600; i++)); do
        curl -fs -o /dev/null --max-time 1 "$2" && return 0
        kill -0 "$3" 2>/dev/null || die "$1 exited during start-up: $(tail -5 "$WORK/apus.log" "$WORK/nginx/logs/error.log" 2>/dev/null)"
        sleep 0.1
    done
    die "$1 did not answer $2 within 60 s"
}
NGINX_URL="http://127.0.0.1:$NGINX_PORT/health"
APUS_URL="http://127.0.0.1:$APUS_PORT/health"
wait_healthy nginx "$NGINX_URL" "$NGINX_PID"
wait_healthy apus "$APUS_URL" "$APUS_PID"

# ---------------------------------------------------------------------------------------------
# Measurement helpers.

proc_ticks() {  # utime+stime, in clock ticks, of the given processes (all their threads)
    local pid total=0 fields
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        fields=$(sed 's/^.*) //' "/proc/$pid/stat") || continue
        # After "pid (comm) ": field 3 (state) is word 1, so utime (14) is word 12, stime (15) word 13.
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}

others_ticks() {
    # CPU ticks used so far by every process outside this script's process tree, their reaped
    # children included (cutime/cstime), kernel threads excluded. The delta over a run is the CPU the
    # rest of the machine took: a process that exits in between moves its time into its parent's.
    # (cat fails for processes that exit while it reads: that is expected.)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v me=$$ '
        {
            pid = $1; s = $0; sub(/^.*\) /, "", s); split(s, f, " ")
            ppid[pid] = f[2]; ticks[pid] = f[12] + f[13] + f[14] + f[15]
        }
        END {
            total = 0
            for (p in ticks) {
                if (p == 2 || ppid[p] == 2) continue
                q = p; ours = 0
                for (i = 0; i < 64 && q > 1; i++) { if (q == me) { ours = 1; break } q = ppid[q] }
                if (!ours) total += ticks[p]
            }
            print total
        }'
}

server_pids() {  # name -> the server's processes (nginx: master and workers)
    if [[ $1 == nginx ]]; then
        echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true)
    else
        echo "$APUS_PID"
    fi
}

to_seconds() {  # bash `times` value such as 0m1.234s -> 1.234
    awk '{ split($0, a, "m"); sub("s", "", a[2]); printf "%.3f", a[1] * 60 + a[2] }' <<<"$1"
}

to_ms() {  # wrk latency such as 812.00us / 1.23ms / 1.02s / 2.00m -> milliseconds
    awk '{
        v = $0; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
        if (f < 0 || v == "") print "NA"; else printf "%.3f", v * f
    }' <<<"$1"
}

median() {  # [decimals]: numbers on stdin -> median ("NA" ignored)
    grep -v '^NA$' | sort -g | awk -v fmt="%.${1:-2}f" '{a[NR] = $1} END {
        if (NR == 0) { print "NA"; exit }
        if (NR % 2) printf fmt, a[(NR + 1) / 2]; else printf fmt, (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}

pct() {  # ticks seconds -> % of one core
    awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN { if (s > 0) printf "%.0f", t / hz / s * 100; else print "NA" }'
}

wait_quiet() {  # waits up to QUIET_WAIT s for the machine to be idle but for our (idle) servers
    local waited=0 o0 busy
    ((QUIET_WAIT > 0)) || return 0
    while ((waited < QUIET_WAIT)); do
        o0=$(others_ticks)
        sleep 1
        busy=$(($(others_ticks) - o0))
        ((busy * 100 / CLK_TCK > BUSY_LIMIT)) || return 0
        ((waited > 0)) || log "the machine is busy ($((busy * 100 / CLK_TCK))% of a core): waiting up to ${QUIET_WAIT}s"
        waited=$((waited + 1))
    done
    log "still busy after ${QUIET_WAIT}s: running anyway (the run will be flagged)"
}

# One wrk run against a server. Writes $WORK/<label>.txt (wrk's output) and appends a result line
# to $WORK/results.tsv: label server rps p99_ms avg_ms server_cpu% server_cpu_us_per_request
# wrk_cpu% other_cpu% flags
run_wrk() {  # label server url
    local label=$1 server=$2 url=$3 out="$WORK/$1.txt" pids s0 s1 o0 o1 t0 t1 rc=0
    pids=$(server_pids "$server")
    s0=$(proc_ticks $pids)
    o0=$(others_ticks)
    t0=$(date +%s.%N)
    # The subshell's `times` reports the CPU of its children, i.e. of wrk alone.
    (
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out" 2>&1 || exit $?
        times >"$out.times"
    ) || rc=$?
    t1=$(date +%s.%N)
    s1=$(proc_ticks $pids)
    o1=$(others_ticks)

    local elapsed rps reqs avg p99 non2xx sockerr wrk_secs wrk_ticks server_ticks other_ticks us_per_req flags=()
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    reqs=$(awk '/ requests in / {print $1; exit}' "$out")
    avg=$(to_ms "$(awk '$1 == "Latency" {print $2; exit}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2; exit}' "$out")")
    non2xx=$(awk -F: '/Non-2xx or 3xx responses/ {gsub(/ /, "", $2); print $2}' "$out")
    sockerr=$(sed -n 's/^ *Socket errors: *//p' "$out")
    if [[ -f $out.times ]]; then
        wrk_secs=$(sed -n 2p "$out.times" | awk '{print $1 " " $2}')
        wrk_secs=$(awk -v u="$(to_seconds "${wrk_secs% *}")" -v s="$(to_seconds "${wrk_secs#* }")" 'BEGIN { print u + s }')
    else
        wrk_secs=0
    fi
    wrk_ticks=$(awk -v s="$wrk_secs" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", s * hz }')
    server_ticks=$((s1 - s0))
    other_ticks=$((o1 - o0))
    # The server's CPU time per request served: unlike requests/s, barely moved by other load.
    us_per_req=$(awk -v t="$server_ticks" -v hz="$CLK_TCK" -v n="${reqs:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "NA" }')

    [[ $rc == 0 ]] || flags+=("wrk exit $rc")
    [[ -n $rps ]] || { rps=NA; flags+=("no Requests/sec in wrk output"); }
    [[ -z $non2xx ]] || flags+=("non-2xx/3xx: $non2xx")
    [[ -z $sockerr ]] || flags+=("socket errors: $sockerr")
    local other_pct
    other_pct=$(pct "$other_ticks" "$elapsed")
    ((other_pct <= BUSY_LIMIT)) || flags+=("noisy: other processes used ${other_pct}% CPU")
    ((${#flags[@]})) || flags=(OK)

    local IFS=';'
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$server" "$rps" "$p99" "$avg" \
        "$(pct "$server_ticks" "$elapsed")" "$us_per_req" "$(pct "$wrk_ticks" "$elapsed")" "$other_pct" "${flags[*]}" \
        >>"$WORK/results.tsv"
}

# ---------------------------------------------------------------------------------------------
# Warm-up, then interleaved runs.

log "warming up (${WARMUP} each)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$NGINX_URL" >"$WORK/warmup-nginx.txt" 2>&1 || true
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "$APUS_URL" >"$WORK/warmup-apus.txt" 2>&1 || true

: >"$WORK/results.tsv"
for ((r = 1; r <= RUNS; r++)); do
    wait_quiet
    log "run $r/$RUNS: nginx"
    run_wrk "nginx-$r" nginx "$NGINX_URL"
    wait_quiet
    log "run $r/$RUNS: apus"
    run_wrk "apus-$r" apus "$APUS_URL"
done

# ---------------------------------------------------------------------------------------------
# Report.

col() { awk -F'\t' -v s="$1" -v c="$2" '$2 == s {print $c}' "$WORK/results.tsv"; }
response_bytes() { curl -s -i "$1" | wc -c | tr -d ' '; }

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[[ -n $cpu_model ]] || cpu_model=$(awk -F': ' '/^(Hardware|Processor|cpu model)/ {print $2; exit}' /proc/cpuinfo)
wrk_version=$( (wrk -v 2>&1 || true) | head -1 | sed 's/ Copyright.*//')  # wrk -v exits 1
nginx_version=$( ("$NGINX" -v 2>&1 || true) | sed 's/^nginx version: //')
apus_version=$("$APUS_BIN" --version 2>/dev/null || echo unknown)
apus_threads=$(awk '/^Threads:/ {print $2}' "/proc/$APUS_PID/status" 2>/dev/null || echo NA)

{
    echo "## Apus vs nginx: keep-alive \`GET /health\`"
    echo
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- CPU: ${cpu_model:-unknown}; nproc: $CORES; kernel: $(uname -r)"
    echo "- wrk: $wrk_version; nginx: $nginx_version ($CORES workers); apus: $apus_version ($APUS_BIN, built $(date -u -r "$APUS_BIN" '+%Y-%m-%d %H:%M UTC'))"
    echo "- Load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\`, $RUNS runs each, interleaved, after a $WARMUP warm-up; wrk and both servers share the $CORES cores."
    echo "- Response size (head + body): nginx $(response_bytes "$NGINX_URL") B, apus $(response_bytes "$APUS_URL") B; apus threads after the runs: $apus_threads"
    echo "- CPU % columns are % of one core (max $((CORES * 100))%) over the run; *other* is every other process on the machine (kernel threads excluded). *Server CPU µs/request* is the server's CPU time (all processes and threads, user + system) divided by the requests wrk completed: the cost per request, much less sensitive than requests/s to the load on the machine."
    echo
    echo "| Run | Server | Requests/s | p99 latency (ms) | Avg latency (ms) | Server CPU % | Server CPU µs/request | wrk CPU % | Other CPU % | Check |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '{
        split($1, a, "-"); gsub(/;/, "; ", $10)
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a[2], $2, $3, $4, $5, $6, $7, $8, $9, $10
    }' "$WORK/results.tsv"
    for s in nginx apus; do
        printf '| **median** | **%s** | **%s** | **%s** | %s | %s | **%s** | %s | %s | |\n' "$s" \
            "$(col "$s" 3 | median 0)" "$(col "$s" 4 | median 3)" "$(col "$s" 5 | median 3)" \
            "$(col "$s" 6 | median 0)" "$(col "$s" 7 | median 1)" "$(col "$s" 8 | median 0)" "$(col "$s" 9 | median 0)"
    done
    echo
    ratio() {
        awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.2f", a / b }'
    }
    echo "**Apus/nginx, median requests/s: $(ratio "$(col apus 3 | median)" "$(col nginx 3 | median)")**" \
        "(median p99 latency: $(ratio "$(col apus 4 | median)" "$(col nginx 4 | median)")×;" \
        "median server CPU per request: $(ratio "$(col apus 7 | median)" "$(col nginx 7 | median)")×)"
    if grep -q -v $'\tOK$' "$WORK/results.tsv"; then
        echo
        echo "Some runs are flagged in the Check column: see the raw wrk output (OUT_DIR=... keeps it)."
    fi
} | tee "$WORK/report.md"

# Correctness failures (non-2xx, socket errors, wrk failures) make the exit status 1; noise does not.
if awk -F'\t' '$10 ~ /(non-2xx|socket errors|wrk exit|no Requests)/ {found = 1} END {exit !found}' "$WORK/results.tsv"; then
    exit 1
fi
exit 0
