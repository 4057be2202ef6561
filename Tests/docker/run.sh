#!/usr/bin/env bash
# The Docker image, built and run (`make test-docker`, part of `make test`).
#
#   Tests/docker/run.sh
#
# 1. A container engine (podman or docker; Tests/docker/engine.sh): skipped, with the reason, only
#    when none is installed or none can run a container here. APUS_REQUIRE_CONTAINER=1 turns the
#    skip into a failure.
# 2. The base images of the Dockerfile: present, loaded from .cache/containers/, pulled, or made
#    locally (stand-ins from debootstrap and the installed Swift toolchain; engine.sh says how).
# 3. The image, built from ./Dockerfile exactly as the README says (podman: plus --format docker
#    for the HEALTHCHECK, --pull=never and clamped ulimits), tagged $APUS_TEST_IMAGE.
# 4. Its metadata (user, port, healthcheck, entrypoint) and `ldd` of the binary inside.
# 5. A container with -p 127.0.0.1:PORT:8080: /health/ready within 180 s, then /health,
#    /generate (JSON), /generate with "stream": true (SSE), /embed, /metrics, /info, the image's
#    HEALTHCHECK command, the user it runs as.
# 6. Graceful stop: a long streamed generation is in flight when the container is stopped
#    (SIGTERM); readiness must stop answering 200, the stream must finish every token it was
#    asked for, and the container must exit 0 before the stop timeout.
# 7. Other models from a volume (-v Models/cache:/models:ro and --generation-model ...), when
#    Models/cache has the default models.
# Exit status: 0 passed or skipped, 1 a check failed, 2 the image could not be built.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
IMAGE=${APUS_TEST_IMAGE:-localhost/apus:test}
READY_TIMEOUT=180
STOP_TIMEOUT=60
PYTHON=${PYTHON:-python3}
# shellcheck source=Tests/docker/engine.sh
. "$ROOT/Tests/docker/engine.sh"

T_START=$SECONDS
FAILURES=0
CONTAINERS=()
WORK=$(mktemp -d)

cleanup() {
    local c
    for c in "${CONTAINERS[@]}"; do
        "${ENGINE[@]}" rm -f -t 0 "$c" >/dev/null 2>&1 || "${ENGINE[@]}" rm -f "$c" >/dev/null 2>&1
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() {
    echo "docker-test: SKIPPED: $*"
    if [ "${APUS_REQUIRE_CONTAINER:-0}" = 1 ]; then
        echo "docker-test: APUS_REQUIRE_CONTAINER=1: failing instead"
        exit 1
    fi
    exit 0
}
pass() { log "ok: $*"; }
fail() { log "FAIL: $*"; FAILURES=$((FAILURES + 1)); }

# --- 1. engine ------------------------------------------------------------------------------
engine_init || skip "$SKIP_REASON"
log "engine: ${ENGINE[*]}"

# --- 2. base images -------------------------------------------------------------------------
t0=$SECONDS
ensure_base_images
case $? in
    0) ;;
    2) skip "$SKIP_REASON" ;;
    *) log "the base images could not be made"; exit 2 ;;
esac
T_BASES=$((SECONDS - t0))
log "base images ready in ${T_BASES} s"

# --- 3. build -------------------------------------------------------------------------------
t0=$SECONDS
log "building $IMAGE: ${ENGINE[*]} build ${BUILD_FLAGS[*]} -t $IMAGE ."
if ! "${ENGINE[@]}" build "${BUILD_FLAGS[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1; then
    tail -60 "$WORK/build.log"
    log "the image did not build (log above)"
    exit 2
fi
T_BUILD=$((SECONDS - t0))
SIZE=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in ${T_BUILD} s: $((SIZE / 1000000)) MB ($SIZE bytes)"

# --- 4. metadata and libraries --------------------------------------------------------------
"${ENGINE[@]}" image inspect "$IMAGE" >"$WORK/inspect.json"
if "$PYTHON" - "$WORK/inspect.json" <<'EOF'
import json, sys
img = json.load(open(sys.argv[1]))[0]
cfg = img.get("Config") or {}
# docker keeps the healthcheck in Config, podman at the top level.
hc = cfg.get("Healthcheck") or img.get("Healthcheck") or img.get("HealthCheck") or {}
problems = []
if cfg.get("User") != "10001:10001":
    problems.append("user is %r, want 10001:10001" % cfg.get("User"))
if "8080/tcp" not in (cfg.get("ExposedPorts") or {}):
    problems.append("8080/tcp is not exposed: %r" % cfg.get("ExposedPorts"))
if "apus-healthcheck" not in " ".join(hc.get("Test") or []):
    problems.append("no HEALTHCHECK running apus-healthcheck: %r" % hc)
if (cfg.get("Entrypoint") or [None])[0] != "/usr/bin/tini":
    problems.append("entrypoint is %r, want tini as PID 1" % cfg.get("Entrypoint"))
if cfg.get("StopSignal") not in ("SIGTERM", "15", None):
    problems.append("stop signal is %r" % cfg.get("StopSignal"))
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF
then pass "image metadata: user 10001, EXPOSE 8080, HEALTHCHECK, tini entrypoint, SIGTERM"
else fail "image metadata"; fi

"${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" --entrypoint ldd "$IMAGE" /usr/local/bin/apus >"$WORK/ldd.txt" 2>"$WORK/ldd.err"
if grep -q "not found" "$WORK/ldd.txt"; then
    fail "ldd: missing libraries in the image:"; grep "not found" "$WORK/ldd.txt"
elif grep -q "libswiftCore" "$WORK/ldd.txt"; then
    fail "ldd: the Swift standard library is linked dynamically"
elif ! grep -q "libopenblas" "$WORK/ldd.txt"; then
    fail "ldd did not run:"; cat "$WORK/ldd.txt" "$WORK/ldd.err"
else
    pass "ldd: every library found; Swift runtime static ($(awk '{print $1}' "$WORK/ldd.txt" | grep -v -E 'vdso|ld-linux' | tr '\n' ' '))"
fi

# --- 5. run ---------------------------------------------------------------------------------
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME PORT [ENGINE RUN ARGS...] -- [apus ARGS...]
start_container() {
    local name=$1 port=$2
    shift 2
    local extra=() args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do extra+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    args=("$@")
    "${ENGINE[@]}" rm -f "$name" >/dev/null 2>&1
    CONTAINERS+=("$name")
    if ! "${ENGINE[@]}" run -d --name "$name" "${RUN_FLAGS[@]}" -p "127.0.0.1:$port:8080" "${extra[@]}" \
        "$IMAGE" "${args[@]}" >/dev/null 2>"$WORK/run.err"; then
        cat "$WORK/run.err"
        return 1
    fi
}

# wait_ready NAME PORT: 0 when /health/ready answers 200
wait_ready() {
    local name=$1 port=$2 deadline=$((SECONDS + READY_TIMEOUT)) code
    while [ $SECONDS -lt $deadline ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health/ready" 2>/dev/null)
        [ "$code" = 200 ] && return 0
        [ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
        sleep 0.3
    done
    log "container $name not ready on 127.0.0.1:$port (last answer: ${code:-none}); its log:"
    "${ENGINE[@]}" logs "$name" 2>&1 | tail -30
    return 1
}

now() { date +%s.%N; }
since() { "$PYTHON" -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

NAME=apus-docker-test-$$
PORT=$(free_port)
t0=$(now)
if ! start_container "$NAME" "$PORT"; then
    fail "the container did not start"
    exit 1
fi
wait_ready "$NAME" "$PORT" || { fail "readiness"; exit 1; }
T_READY=$(since "$t0")
pass "started and ready on 127.0.0.1:$PORT (-p 127.0.0.1:$PORT:8080) in ${T_READY} s"
URL=http://127.0.0.1:$PORT

# check LABEL PYTHON-EXPRESSION -- CURL ARGS: runs curl, saves the body, evaluates the expression
# on it (`body` the text, `status` the HTTP code, `ctype` the content type, json() the parsed body,
# events() the parsed `data:` lines of an SSE body).
check() {
    local label=$1 code=$2
    shift 3
    local meta
    meta=$(curl -s -o "$WORK/body" -w '%{http_code} %{content_type}' --max-time 120 "$@")
    if "$PYTHON" - "$WORK/body" "$meta" "$code" <<'EOF'
import json, math, sys
body = open(sys.argv[1], encoding="utf-8", errors="replace").read()
status, _, ctype = sys.argv[2].partition(" ")
status = int(status or 0)
def json_():
    return json.loads(body)
def events():
    out = []
    for line in body.splitlines():
        if line.startswith("data:"):
            out.append(json.loads(line[5:].strip()))
    return out
env = {"body": body, "status": status, "ctype": ctype, "json": json_, "events": events, "math": math}
try:
    ok = eval(sys.argv[3], env)
except Exception as e:
    print("  check raised %s: %s" % (type(e).__name__, e))
    ok = False
if not ok:
    print("  status %d, %s, body: %s" % (status, ctype, body[:600]))
sys.exit(0 if ok else 1)
EOF
    then pass "$label"; else fail "$label"; fi
}

PROMPT='<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
check "GET /health" 'status == 200' -- "$URL/health"
# Greedy: the model, its kernels (built for the image's target CPU) and the tokenizer all work.
check "POST /generate (JSON): the capital of France is Paris" \
    'status == 200 and "Paris" in json()["generated_text"] and json()["details"]["generated_tokens"] > 0' -- \
    "$URL/generate" -H 'content-type: application/json' \
    -d "{\"inputs\":\"$PROMPT\",\"parameters\":{\"max_new_tokens\":24,\"details\":true}}"
# Counting goes on for a long time, so greedy decoding ends by length, not at an end token.
COUNT_PROMPT='Count from 1 to 1000: 1, 2, 3, 4,'
check "POST /generate with \"stream\": true (SSE)" \
    'status == 200 and ctype.startswith("text/event-stream") and len(events()) == 16 and all("token" in e for e in events()) and all(e["generated_text"] is None for e in events()[:-1]) and events()[-1]["generated_text"] == "".join(e["token"]["text"] for e in events()) and events()[-1]["details"]["generated_tokens"] == 16 and events()[-1]["details"]["finish_reason"] == "length"' -- \
    -N "$URL/generate" -H 'content-type: application/json' \
    -d "{\"inputs\":\"$COUNT_PROMPT\",\"stream\":true,\"parameters\":{\"max_new_tokens\":16,\"details\":true}}"
check "POST /embed" \
    'status == 200 and len(json()) == 2 and all(len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in json())' -- \
    "$URL/embed" -H 'content-type: application/json' -d '{"inputs":["What is Deep Learning?","Hi"]}'
check "GET /metrics" \
    'status == 200 and "apus_requests_waiting" in body and "apus_generation_tokens_total" in body and "apus_ready 1" in body' -- \
    "$URL/metrics"
check "GET /info" 'status == 200 and "smollm2-135m-instruct" in body and "all-minilm-l6-v2" in body' -- "$URL/info"

if "${ENGINE[@]}" exec "$NAME" /usr/local/bin/apus-healthcheck; then
    pass "HEALTHCHECK command (apus-healthcheck) reports healthy"
else
    fail "HEALTHCHECK command reports unhealthy"
fi
if [ "$ENGINE_NAME" = podman ]; then
    if out=$("${ENGINE[@]}" healthcheck run "$NAME" 2>&1); then
        pass "podman healthcheck run: ${out:-healthy}"
    else
        fail "podman healthcheck run: $out"
    fi
fi
uid=$("${ENGINE[@]}" exec "$NAME" id -u 2>&1)
pid1=$("${ENGINE[@]}" exec "$NAME" cat /proc/1/comm 2>&1)
if [ "$uid" = 10001 ] && [ "$pid1" = tini ]; then
    pass "runs as uid 10001 with tini as PID 1"
else
    fail "uid $uid, PID 1 $pid1 (want 10001, tini)"
fi

# Memory after those requests: the apus process's resident set and its peak (mapped model pages
# included). docs/deploy.md sizes the Deployment from figures like these.
MEM=$("${ENGINE[@]}" exec "$NAME" sh -c 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = apus ] && grep -E "^Vm(RSS|HWM)" $p/status; done' 2>/dev/null | tr -s ' \t' ' ' | tr '\n' ' ' | sed 's/ $//')
log "memory: apus ${MEM:-?}"

# --- 6. graceful stop with a request in flight ----------------------------------------------
NEW_TOKENS=400
curl -sN --max-time 300 "$URL/generate" -H 'content-type: application/json' \
    -d "{\"inputs\":\"$COUNT_PROMPT\",\"stream\":true,\"parameters\":{\"max_new_tokens\":$NEW_TOKENS,\"details\":true}}" \
    >"$WORK/stream.txt" 2>"$WORK/stream.err" &
CURL_PID=$!
deadline=$((SECONDS + 60))
while [ "$(grep -c '^data:' "$WORK/stream.txt" 2>/dev/null)" -lt 5 ] && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
at_stop=$(grep -c '^data:' "$WORK/stream.txt")
t_stop=$(now)
"${ENGINE[@]}" stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null 2>"$WORK/stop.err" &
STOP_PID=$!
# While draining, readiness stops answering 200 (503, or the listener is gone).
drain_seen=""
deadline=$((SECONDS + 10))
while [ $SECONDS -lt $deadline ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$URL/health/ready" 2>/dev/null)
    if [ "$code" != 200 ]; then drain_seen=$code; break; fi
    sleep 0.05
done
wait "$CURL_PID"
curl_status=$?
wait "$STOP_PID"
stop_status=$?
stop_secs=$(since "$t_stop")
final=$(grep -c '^data:' "$WORK/stream.txt")
if [ -n "$drain_seen" ]; then
    pass "readiness answered ${drain_seen/000/no connection} (not 200) once the stop began"
else
    fail "readiness still answered 200 10 s after the stop began"
fi
if [ "$curl_status" = 0 ] && "$PYTHON" - "$WORK/stream.txt" "$NEW_TOKENS" <<'EOF'
import json, sys
events = [json.loads(l[5:]) for l in open(sys.argv[1]) if l.startswith("data:")]
want = int(sys.argv[2])
last = events[-1] if events else {}
ok = len(events) == want and (last.get("details") or {}).get("generated_tokens") == want \
    and (last.get("details") or {}).get("finish_reason") == "length" and last.get("generated_text") is not None
if not ok:
    print("  %d events; last: %s" % (len(events), json.dumps(last)[:400]))
sys.exit(0 if ok else 1)
EOF
then
    pass "in-flight stream drained: $at_stop events when SIGTERM was sent, all $final tokens and the final text by the end"
else
    fail "in-flight stream cut short (curl status $curl_status, $at_stop events at stop, $final at the end): $(cat "$WORK/stream.err")"
fi
if [ "$at_stop" -ge "$final" ]; then
    fail "the stream had finished before the stop: nothing was in flight (raise NEW_TOKENS)"
fi
exit_code=$("${ENGINE[@]}" inspect -f '{{.State.ExitCode}}' "$NAME" 2>&1)
"${ENGINE[@]}" logs "$NAME" >"$WORK/server.log" 2>&1
if [ "$stop_status" = 0 ] && [ "$exit_code" = 0 ] \
    && "$PYTHON" -c "import sys; sys.exit(0 if float('$stop_secs') < $STOP_TIMEOUT - 1 else 1)"; then
    pass "container exited 0, ${stop_secs} s after the stop (timeout ${STOP_TIMEOUT} s)"
else
    fail "container stop: status $stop_status, exit code $exit_code after ${stop_secs} s; its log:"
    tail -20 "$WORK/server.log"
fi

# --- 7. other models from a volume ----------------------------------------------------------
GGUF=Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$ROOT/$GGUF" ] && [ -d "$ROOT/Models/cache/all-minilm-l6-v2" ]; then
    NAME2=apus-docker-test-volume-$$
    PORT2=$(free_port)
    # --read-only as well: the Kubernetes Deployment sets readOnlyRootFilesystem.
    if start_container "$NAME2" "$PORT2" --read-only -v "$ROOT/Models/cache:/models:ro" -- \
            serve --host 0.0.0.0 --port 8080 \
            --generation-model /models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
            --generation-model-id mounted-smollm2 \
            --embedding-model /models/all-minilm-l6-v2 --embedding-model-id mounted-minilm \
        && wait_ready "$NAME2" "$PORT2"; then
        check "models from a volume (-v Models/cache:/models:ro, --read-only root): /info names them" \
            'status == 200 and "mounted-smollm2" in body and "mounted-minilm" in body' -- "http://127.0.0.1:$PORT2/info"
        check "models from a volume: /generate answers" \
            'status == 200 and json()["details"]["generated_tokens"] == 8' -- \
            "http://127.0.0.1:$PORT2/generate" -H 'content-type: application/json' \
            -d "{\"inputs\":\"$COUNT_PROMPT\",\"parameters\":{\"max_new_tokens\":8,\"details\":true}}"
    else
        fail "container with models from a volume"
    fi
    "${ENGINE[@]}" stop -t "$STOP_TIMEOUT" "$NAME2" >/dev/null 2>&1
else
    log "note: no models in Models/cache (python3 Models/fetch.py): the volume check is left out"
fi

# --- summary --------------------------------------------------------------------------------
log "figures: image $((SIZE / 1000000)) MB; base images ${T_BASES} s; build ${T_BUILD} s; ready ${T_READY} s; stop ${stop_secs} s; memory ${MEM:-?}; whole test $((SECONDS - T_START)) s"
if [ "$FAILURES" -gt 0 ]; then
    log "$FAILURES check(s) failed"
    exit 1
fi
log "all checks passed"
exit 0
