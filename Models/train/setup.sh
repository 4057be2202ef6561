#!/bin/sh
# Make .venv-train/ (gitignored) at the repository root with the pinned training packages
# (JAX on CPU, optax, safetensors, numpy), all from PyPI.  Re-running is harmless.
set -eu
cd "$(dirname "$0")/../.."
[ -x .venv-train/bin/python ] || python3 -m venv .venv-train
.venv-train/bin/pip install -q --disable-pip-version-check -r Models/train/requirements.txt
.venv-train/bin/python -c 'import jax, optax, safetensors; print("jax", jax.__version__, "optax", optax.__version__)'
