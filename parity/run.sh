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

# MS CLAP (msclap 1.3.x): 2022 (CNN14 + BERT) and 2023 (HTS-AT + GPT-2), native towers vs msclap's
# own model modules, in the same isolated env plus msclap (--no-deps: its torchaudio pin would
# pull another torch) and what its model modules import (parity/msclap_env.txt).
step "$PARITY_DIR/laion-env/bin/pip" install -q --disable-pip-version-check -r parity/msclap_env.txt
step "$PARITY_DIR/laion-env/bin/pip" install -q --disable-pip-version-check --no-deps "msclap==1.3.*"
step "$PARITY_DIR/laion-env/bin/python" parity/msclap_reference.py "$PARITY_DIR/msclap"
step "$PY" parity/msclap_compare.py "$PARITY_DIR/msclap"

# The gate must bite: each known bug injected into humanclap's side (probes.MUTATIONS) must make
# a comparison FAIL, on the reference outputs above (one family or release each, to keep it short).
must_fail() {  # MUTATION COMMAND...: exit 1 with "PARITY FAIL" required; a pass or a crash stops the run
  local m=$1 log rc=0; shift
  log=$(mktemp)
  echo "== mutation $m: $*"
  HUMANCLAP_PARITY_MUTATION=$m "$@" > "$log" 2>&1 || rc=$?
  grep -E "FAIL$|^PARITY" "$log" || true
  if [ "$rc" -ne 1 ] || ! grep -q "^PARITY FAIL" "$log"; then
    echo "mutation $m was not caught (exit $rc): the parity check cannot see this bug"; tail -n 20 "$log"; exit 1
  fi
  rm -f "$log"
}
step must_fail time-reverse "$PY" parity/msclap_compare.py "$PARITY_DIR/msclap" --versions 2022
step must_fail log-floor-1e-5 "$PY" parity/msclap_compare.py "$PARITY_DIR/msclap" --versions 2022
step must_fail no-qkv-bias "$PY" parity/msclap_compare.py "$PARITY_DIR/msclap" --versions 2023
step must_fail time-reverse "$PY" parity/laion_compare.py "$PARITY_DIR/laion" --families HTSAT-tiny-fused
step must_fail log-floor-1e-5 "$PY" parity/laion_compare.py "$PARITY_DIR/laion" --families HTSAT-tiny-unfused
step must_fail no-qkv-bias "$PY" parity/laion_compare.py "$PARITY_DIR/laion" --families HTSAT-tiny-unfused
