#!/usr/bin/env bash
# Run every benchmark, then the report (table in docs/benchmarks.md, plots when matplotlib is installed).
#
#   bash bench/run_all.sh            full sizes (about 55 minutes on 2 cores)
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
  LAT=30 CTL=10 CU=1000 CUP=500 MB=100 SMAILS=10 SIZES=1000 SMALL=20 BIG=200 DIAG=20 SMALL2=20
else
  LAT=${LATENCY_MAILS:-200} CTL=${CONTROL_INTEGRATIONS:-50} CU=${CATCHUP_MAILS:-10000}
  CUP=${CATCHUP_PROFILE_MAILS:-3000} MB=${SCALE_MAILBOXES:-1000} SMAILS=${SCALE_MAILS:-50}
  SIZES=1000,5000,10000 SMALL=90 BIG=${SCALE_BIG_MAILBOXES:-2000} DIAG=200 SMALL2=200
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
$PY -m bench.catchup --mails "$CU" --erxes separate
$PY -m bench.scale --mailboxes "$MB" --mails "$SMAILS"
# evidence for the analysis in docs/benchmarks.md
$PY -m bench.control --integrations 10 --with-mail --out control-with-mail
$PY -m bench.storage_ops --sizes "$SIZES"
$PY -m bench.write_patterns
$PY -m bench.parse_speed
if [[ -x .venv/bin/py-spy ]] || command -v py-spy >/dev/null; then
  $PY -m bench.catchup --mails "$CUP" --profile
  $PY -m bench.profile --stem catchup-profiled
fi
# memory of TLS mailboxes (the test-bed Dovecot serves at most ~100 TLS sessions: see docs) and, EXPERIMENT (not
# the product, bench/patched_runtime.py), one SSLContext shared by all mailboxes
$PY -m bench.scale --mailboxes "$SMALL" --mails 10 --settle 10 --out scale-90-plain
$PY -m bench.scale --mailboxes "$SMALL" --mails 10 --settle 10 --tls --out scale-90-tls
$PY -m bench.scale --mailboxes "$SMALL" --mails 10 --settle 10 --tls --patch shared-tls-context \
  --out scale-90-tls-patched-shared-tls
$PY -m bench.scale --mailboxes "$MB" --mails 10 --settle 10 --patch shared-tls-context --out scale-patched-shared-tls
# the largest size tried
$PY -m bench.scale --mailboxes "$BIG" --mails 20 --out scale-largest
# the periodic stalls with many mailboxes: 200 mails with GC pauses logged (instrumentation only), and the
# MongoDB writes of mailboxes that receive nothing
$PY -m bench.scale --mailboxes "$MB" --mails "$DIAG" --patch gc-log --out scale-diagnose
$PY -m bench.idle_writes --mailboxes "$SMALL2"
$PY -m bench.report
