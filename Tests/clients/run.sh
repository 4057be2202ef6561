#!/usr/bin/env bash
# Drives a real `apus serve` with the real Python clients from PyPI: text-generation and
# huggingface_hub's InferenceClient on the TGI routes (Tests/clients/test_tgi_clients.py), and
# huggingface_hub's feature_extraction and the openai client on the embedding routes
# (Tests/clients/test_embedding_clients.py), and the openai client on /v1/completions and
# /v1/chat/completions (Tests/clients/test_openai_generation_clients.py). The server loads the
# trained byte-level models when `make models` installed them; the tests that need one skip
# otherwise.
#
#   Tests/clients/run.sh [pytest args...]      (or `make test-clients`)
#   APUS_SERVE_ARGS="--trained-models none" Tests/clients/run.sh     (extra `apus serve` options)
#
# 1. A venv at .venv-clients/ (gitignored), made once; Tests/clients/requirements.txt is installed
#    into it only when its sha256 differs from the stamp kept in the venv.
# 2. `.build/release/apus serve` on a free loopback port (APUS_BIN overrides the binary), waiting
#    for GET /health/ready (60 s at most).
# 3. pytest from the venv, with APUS_URL=http://127.0.0.1:PORT.
# 4. SIGTERM to the server, which must exit 0 within 10 s.
# Exits with pytest's status (1 if pytest passed but the server did not stop cleanly).
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv-clients
REQUIREMENTS=$ROOT/Tests/clients/requirements.txt
. "$ROOT/Tests/lib/venv.sh"
APUS_BIN=${APUS_BIN:-$ROOT/.build/release/apus}
# Extra options for `apus serve`, split on spaces (e.g. --trained-models none).
read -r -a SERVE_ARGS <<<"${APUS_SERVE_ARGS:-}"
READY_TIMEOUT=60
STOP_TIMEOUT=10

say() { echo "clients: $*"; }

# --- 1. venv --------------------------------------------------------------------------------
ensure_venv "$VENV" "$REQUIREMENTS"

# --- 2. server ------------------------------------------------------------------------------
[ -x "$APUS_BIN" ] || { say "no binary at $APUS_BIN (run 'make build')"; exit 2; }
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A port picked this way can be taken before apus binds it: try a few.
for attempt in 1 2 3 4 5; do
    PORT=$(free_port)
    "$APUS_BIN" serve --host 127.0.0.1 --port "$PORT" --log-level warning "${SERVE_ARGS[@]}" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    ready=""
    deadline=$((SECONDS + READY_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/health/ready" 2>/dev/null)
        if [ "$code" = 200 ]; then ready=1; break; fi
        sleep 0.2
    done
    [ -n "$ready" ] && break
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        say "apus not ready on port $PORT within ${READY_TIMEOUT}s; its log:"
        cat "$WORK/server.log"
        exit 2
    fi
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
    say "apus exited before it was ready on port $PORT (attempt $attempt); its log:"
    cat "$WORK/server.log"
done
[ -n "$ready" ] || { say "could not start apus"; exit 2; }
say "apus (pid $SERVER_PID) ready on 127.0.0.1:$PORT"

# --- 3. pytest ------------------------------------------------------------------------------
# No network and no account: the clients get the server's URL as `model`, a throw-away HF_HOME
# (no stored token), no token variables and no telemetry; conftest.py also refuses any
# connection that is not to loopback. HF_HUB_OFFLINE must NOT be set: huggingface_hub 2.x then
# refuses every request, the local URL included (OfflineModeIsEnabled).
mkdir -p "$WORK/hf-home"
env -u HF_TOKEN -u HUGGING_FACE_HUB_TOKEN -u HF_HUB_OFFLINE -u HF_ENDPOINT \
    APUS_URL="http://127.0.0.1:$PORT" \
    HF_HOME="$WORK/hf-home" \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_IMPLICIT_TOKEN=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    DO_NOT_TRACK=1 \
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" \
    no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" \
    PYTHONDONTWRITEBYTECODE=1 \
    "$VENV/bin/python" -m pytest "$ROOT/Tests/clients" -v -p no:cacheprovider "$@" 2>&1 | tee "$WORK/pytest.out"
status=${PIPESTATUS[0]}

# --- 4. stop the server ---------------------------------------------------------------------
kill -TERM "$SERVER_PID"
stopped=""
deadline=$((SECONDS + STOP_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then stopped=1; break; fi
    sleep 0.1
done
if [ -z "$stopped" ]; then
    say "apus did not exit within ${STOP_TIMEOUT}s of SIGTERM; its log:"
    cat "$WORK/server.log"
    [ "$status" = 0 ] && status=1
else
    wait "$SERVER_PID"
    server_status=$?
    SERVER_PID=""
    if [ "$server_status" = 0 ]; then
        say "apus exited 0 after SIGTERM"
    else
        say "apus exited $server_status after SIGTERM (want 0); its log:"
        cat "$WORK/server.log"
        [ "$status" = 0 ] && status=1
    fi
fi

# pytest's summary line, last, so it is the closing line of the run.
summary=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran|deselected).* =+$' "$WORK/pytest.out" | tail -1)
echo "${summary:-clients: pytest printed no summary line}"
exit "$status"
