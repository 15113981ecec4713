#!/usr/bin/env bash
# The test command: install what is missing, start the servers on test ports, run pytest, stop them.
#
#   scripts/test.sh [PYTEST ARGS...]          e.g. scripts/test.sh -x tests/runtime -k idle
#
# 1. scripts/install.sh (about 1 s when nothing is missing)
# 2. scripts/services.sh start /tmp/imap-runtime/test on test ports, so it never clashes with a demo
#    instance: MONGO_PORT=27217 IMAP_PORT=11143 IMAPS_PORT=11993 LMTP_PORT=11024 SUBMISSION_PORT=11587
#    SMTP_PORT=11025 OAUTH_PORT=11980 CYRUS_IMAP_PORT=11243 CYRUS_IMAPS_PORT=11293 (a private RabbitMQ/Redis, only where none runs on 5672/6379: 11672/11379)
# 3. IMAP_RUNTIME_SERVICES_ENV=/tmp/imap-runtime/test/services.env .venv/bin/python -m pytest
#      -p no:cacheprovider --basetemp=/tmp/imap-runtime/pytest "$@"        (run from the repo root)
# 4. on exit: services.sh stop (KEEP_SERVICES=1 leaves them running for the next run).
# Exit status: pytest's; "no tests collected" (5) counts as a failure (1).
# Concurrent runs on one machine share /tmp/imap-runtime/test, so they wait for each other.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=/tmp/imap-runtime
STATE=$ROOT/test

bash "$REPO/scripts/install.sh"

mkdir -p "$ROOT"; chmod 0755 "$ROOT"   # dovecot's users must traverse it
exec 9>"$ROOT/test.lock"               # one test run at a time on this machine
if ! flock -n 9; then
  echo "test: another scripts/test.sh is running (lock $ROOT/test.lock); waiting up to ${TEST_LOCK_WAIT:-1800} s ..." >&2
  flock -w "${TEST_LOCK_WAIT:-1800}" 9 || { echo "test: gave up waiting for $ROOT/test.lock" >&2; exit 1; }
fi

# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
  if [[ "${KEEP_SERVICES:-0}" == 1 ]]; then
    echo "test: KEEP_SERVICES=1: servers left running; stop them with: scripts/services.sh stop $STATE" >&2
  else
    bash "$REPO/scripts/services.sh" stop "$STATE" >/dev/null 9>&- ||
      echo "test: 'scripts/services.sh stop $STATE' failed" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

MONGO_PORT=27217 IMAP_PORT=11143 IMAPS_PORT=11993 LMTP_PORT=11024 SUBMISSION_PORT=11587 SMTP_PORT=11025 \
  PRIVATE_AMQP_PORT=11672 PRIVATE_REDIS_PORT=11379 OAUTH_PORT=11980 \
  CYRUS_IMAP_PORT=11243 CYRUS_IMAPS_PORT=11293 \
  bash "$REPO/scripts/services.sh" start "$STATE" 9>&-

export IMAP_RUNTIME_SERVICES_ENV=$STATE/services.env
cd "$REPO"
rc=0
"$REPO/.venv/bin/python" -m pytest -p no:cacheprovider --basetemp="$ROOT/pytest" "$@" || rc=$?
if ((rc == 5)); then
  echo "test: pytest collected no tests: counted as a failure" >&2
  rc=1
fi
exit "$rc"
