#!/usr/bin/env bash
# The Python package's tests: install crates/repvgg-py the way users do (pip, maturin builds the
# extension in release mode) into a fresh venv, then run its pytest suite (fixtures bit for bit
# against the `repvgg` binary, bad inputs, threads, ONNX in onnxruntime, Ray on a local cluster).
# Needs python3 (>= 3.9) with venv and pip, and the `repvgg` binary (REPVGG_BIN, or the
# workspace's target/debug/repvgg, which `cargo test --workspace` builds).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${REPVGG_PY_VENV:-target/py-venv}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "./crates/repvgg-py[test,ray]"
"$VENV/bin/python" -m pytest crates/repvgg-py/tests -q "$@"
