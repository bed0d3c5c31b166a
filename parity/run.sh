#!/usr/bin/env bash
# Parity of humanclap with the reference implementations, each in its isolated environment.
# A plain list of steps; each prints its time. Exits non-zero at the first failing step.
#
#   bash parity/run.sh                     # envs and outputs under $PARITY_DIR (default /tmp/humanclap-parity)
#
# HUMANCLAP_PYTHON: the interpreter with humanclap installed (default: python3 on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PARITY_DIR=${PARITY_DIR:-${TMPDIR:-/tmp}/humanclap-parity}
PY=${HUMANCLAP_PYTHON:-python3}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { echo "== $*"; local t0=$SECONDS; "$@"; echo "== done in $((SECONDS - t0)) s"; }

# LAION CLAP (laion_clap 1.1.x): HTSAT-tiny/base, fused and unfused, after `humanclap convert`
step bash parity/make_env.sh "$PARITY_DIR/laion-env"
step "$PARITY_DIR/laion-env/bin/python" parity/laion_reference.py "$PARITY_DIR/laion"
step "$PY" parity/laion_compare.py "$PARITY_DIR/laion"
