# Sourced by the test scripts that need Python packages from PyPI: ensure_venv VENV REQUIREMENTS
# makes (or reuses) a venv at VENV with $PYTHON and installs the lock file REQUIREMENTS into it when
# its sha256 changed since the last install. Uses the caller's `say`; exits 2 on failure.
ensure_venv() {
    local venv=$1 requirements=$2
    local stamp=$venv/.requirements.sha256
    if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "creating $venv"
        rm -rf "$venv"
        "${PYTHON:-python3}" -m venv "$venv" || { say "could not create the venv with ${PYTHON:-python3}"; exit 2; }
        rm -f "$stamp"
    fi
    local want_hash
    want_hash=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want_hash" ]; then
        say "installing $requirements"
        # --no-deps: the files are complete locks (see their headers).
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$requirements" \
            || { say "pip install failed"; exit 2; }
        echo "$want_hash" >"$stamp"
    fi
}
