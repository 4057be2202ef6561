#!/usr/bin/env bash
# deploy/ validated without a cluster (`make test-deploy`, part of `make test`).
#
#   Tests/deploy/run.sh
#
# 1. A venv at .venv-deploy/ (gitignored) with Tests/deploy/requirements.txt (a pinned lock,
#    installed with --no-deps, again only when the file's sha256 changes).
# 2. kubernetes-validate --strict: every built-in kind in deploy/kubernetes/ against the
#    Kubernetes JSON schemas of the oldest and newest versions checked (KUBE_VERSIONS), unknown
#    fields rejected. ServiceMonitor is a CRD with no schema there (a warning); step 4 checks it.
# 3. check-jsonschema: deploy/compose.yaml against the Compose Specification schema it ships.
# 4. Tests/deploy/check_manifests.py: the ServiceMonitor and the prometheus-adapter rule against
#    schemas in Tests/deploy/schemas/, and the parts against each other and Apus (ports,
#    selectors, metric names, probes, grace period vs drain timeout, memory vs KV budget).
# 5. The validators must reject a broken copy of the Deployment (so a pass means something).
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 2
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=$ROOT/.venv-deploy
REQUIREMENTS=$ROOT/Tests/deploy/requirements.txt
. "$ROOT/Tests/lib/venv.sh"
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.29.0 1.37.0"}
say() { echo "deploy-test: $*"; }

ensure_venv "$VENV" "$REQUIREMENTS"

status=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
MANIFESTS=()
for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || MANIFESTS+=("$f")
done

for v in $KUBE_VERSIONS; do
    if "$VENV/bin/kubernetes-validate" --strict -k "$v" "${MANIFESTS[@]}" >"$WORK/kv.out" 2>&1; then
        say "ok: kubernetes-validate --strict -k $v: $(grep -c '^INFO' "$WORK/kv.out") resources pass"
        grep '^WARN' "$WORK/kv.out" | sed 's/^/  /'
    else
        say "FAIL: kubernetes-validate --strict -k $v"
        sed 's/^/  /' "$WORK/kv.out"
        status=1
    fi
done

if "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml >"$WORK/cj.out" 2>&1; then
    say "ok: deploy/compose.yaml matches the Compose Specification schema"
else
    say "FAIL: deploy/compose.yaml against the Compose Specification schema"
    sed 's/^/  /' "$WORK/cj.out"
    status=1
fi

"$VENV/bin/python" Tests/deploy/check_manifests.py | sed 's/^/  /'
[ "${PIPESTATUS[0]}" = 0 ] || status=1

# A Deployment with a misspelt field and a string where a number belongs must fail.
sed -e 's/readinessProbe:/readinesProbe:/' -e 's/terminationGracePeriodSeconds: \([0-9]*\)/terminationGracePeriodSeconds: "\1s"/' \
    deploy/kubernetes/deployment.yaml >"$WORK/broken.yaml"
if "$VENV/bin/kubernetes-validate" --strict --quiet "$WORK/broken.yaml" >"$WORK/broken.out" 2>&1 \
    || [ "$(grep -c '^ERROR' "$WORK/broken.out")" = 0 ]; then
    say "FAIL: kubernetes-validate accepted a broken Deployment"
    status=1
else
    say "ok: a broken Deployment is rejected ($(head -1 "$WORK/broken.out" | cut -c1-140)...)"
fi

[ $status = 0 ] && say "all deploy/ checks passed" || say "deploy/ checks failed"
exit $status
