#!/usr/bin/env bash
# Run every benchmark, then the report (table in docs/benchmarks.md, plots when matplotlib is installed).
#
#   bash bench/run_all.sh            full sizes (about 35 minutes on 2 cores, most of it the 10,000-mail catch-up)
#   bash bench/run_all.sh --quick    small sizes, to check that everything works (a few minutes)
#
# Servers: started by the benchmarks themselves (scripts/services.sh, state in /tmp/imap-runtime/bench and
# /tmp/imap-runtime/bench-scale, ports 13xxx/16xxx; see bench/common.py) and stopped at the end unless
# KEEP_SERVICES=1. Needs scripts/install.sh first; py-spy (profile) and matplotlib (plots) are optional:
#   .venv/bin/pip install py-spy matplotlib
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
quick=0; [[ "${1:-}" == --quick ]] && quick=1
if (( quick )); then
  LAT=30 CTL=10 CU=1000 CUP=500 MB=100 SMAILS=10 SIZES=1000
else
  LAT=${LATENCY_MAILS:-200} CTL=${CONTROL_INTEGRATIONS:-50} CU=${CATCHUP_MAILS:-10000}
  CUP=${CATCHUP_PROFILE_MAILS:-3000} MB=${SCALE_MAILBOXES:-1000} SMAILS=${SCALE_MAILS:-50}
  SIZES=1000,5000,10000
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # 1,000 IMAP sockets and threads in one process

stop() {
  [[ "${KEEP_SERVICES:-0}" == 1 ]] && return
  bash scripts/services.sh stop /tmp/imap-runtime/bench >/dev/null || true
  bash scripts/services.sh stop /tmp/imap-runtime/bench-scale >/dev/null || true
}
trap stop EXIT

set -x
# the four figures
$PY -m bench.latency --mails "$LAT"
$PY -m bench.control --integrations "$CTL"
$PY -m bench.catchup --mails "$CU"
$PY -m bench.scale --mailboxes "$MB" --mails "$SMAILS"
# evidence for the analysis in docs/benchmarks.md
$PY -m bench.control --integrations 10 --with-mail --out control-with-mail
$PY -m bench.storage_ops --sizes "$SIZES"
if [[ -x .venv/bin/py-spy ]] || command -v py-spy >/dev/null; then
  $PY -m bench.catchup --mails "$CUP" --profile
  $PY -m bench.profile --stem catchup-profiled
fi
# EXPERIMENT (not the product): what the first suggested fix buys; see bench/patched_runtime.py
$PY -m bench.catchup --mails "$CU" --patch split-thread-lookup
if [[ -x .venv/bin/py-spy ]] || command -v py-spy >/dev/null; then
  $PY -m bench.catchup --mails "$CUP" --patch split-thread-lookup --profile --out catchup-patched-profiled
  $PY -m bench.profile --stem catchup-patched-profiled
fi
$PY -m bench.report
