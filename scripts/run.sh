#!/usr/bin/env bash
# THE run command: install what is needed, start local services, run imap-runtime in standalone mode with a
# demo mailbox, and print how to send it mail. Ctrl-C stops the runtime and the services this script started.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE=${IMAP_RUNTIME_DEMO_DIR:-/tmp/imap-runtime/demo}
cd "$REPO"
bash scripts/install.sh
mkdir -p /tmp/imap-runtime && chmod 0755 /tmp/imap-runtime
bash scripts/services.sh start "$STATE"
set -a; . "$STATE/services.env"; set +a
bash scripts/mailserver.sh adduser "$MAIL_DIR" demo demo-password >/dev/null
export STANDALONE=true IMAP_RUNTIME_CONFIG="$REPO/configs.json"
PY="$REPO/.venv/bin/python"
PORT=${PORT:-4000}; export PORT
"$REPO/.venv/bin/imap-runtime" &
pid=$!
cleanup() {
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  bash "$REPO/scripts/services.sh" stop "$STATE" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 120); do
  if [[ "$(curl -s --max-time 1 "http://127.0.0.1:$PORT/health" 2>/dev/null || true)" == ok ]]; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "imap-runtime exited; see the log above" >&2; exit 1; }
  sleep 0.5
done
"$PY" -m runtime.demo connect --user demo --password demo-password --imap-port "$IMAP_PORT" \
  --smtp-port "$SUBMISSION_PORT"
cat <<MSG

imap-runtime is running (standalone mode, health: http://127.0.0.1:$PORT/health).
The web console: http://127.0.0.1:$PORT/ (sign in with CONSOLE_PASSWORD, or the one-time password
printed above when it is not set).
The demo mailbox demo@localhost is connected. In another terminal:

  cd $REPO
  set -a; . $STATE/services.env; set +a
  .venv/bin/python -m runtime.demo send --smtp-port $SMTP_PORT --subject "Where is my order?"
  .venv/bin/python -m runtime.demo show

Each mail becomes a customer, a conversation and a stored message within about a second.
Ctrl-C stops everything this script started.
MSG
wait "$pid"
