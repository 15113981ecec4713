#!/usr/bin/env bash
# THE run command: install what is needed, start local services, run imap-runtime in standalone mode with a
# demo mailbox, and print how to send it mail. Ctrl-C stops the runtime and the services this script started.
#
#   bash scripts/run.sh           run the demo (as root on a fresh Debian 12: the first run installs packages)
#   bash scripts/run.sh --reset   remove the demo's data (its database, mail, queues); the next run starts afresh
#
# It touches only what it started, even on a machine where erxes shares RabbitMQ: its queues carry a suffix of
# their own (MESSAGE_BROKER_PREFIX=.imap-demo), its Redis is a private instance (the registration, service:imap,
# never lands in a shared Redis, and the runtime removes it when it stops), MongoDB is its own SecantusDB on
# port 10017, and HTTP listens on 127.0.0.1 only. Environment: IMAP_RUNTIME_DEMO_DIR (state, default
# /tmp/imap-runtime/demo), PORT (4000), MONGO_PORT (10017), PRIVATE_REDIS_PORT (10379), and any setting of the
# README.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE=${IMAP_RUNTIME_DEMO_DIR:-/tmp/imap-runtime/demo}
PY="$REPO/.venv/bin/python"
export MONGO_PORT=${MONGO_PORT:-10017} PRIVATE_REDIS=1 PRIVATE_REDIS_PORT=${PRIVATE_REDIS_PORT:-10379}
export MESSAGE_BROKER_PREFIX=${MESSAGE_BROKER_PREFIX:-.imap-demo}
cd "$REPO"

runtime_alive() { [[ -s "$STATE/runtime.pid" ]] && kill -0 "$(cat "$STATE/runtime.pid")" 2>/dev/null; }

if [[ "${1:-}" == --reset ]]; then
  runtime_alive && { echo "run: the demo runs (pid $(cat "$STATE/runtime.pid")): stop it first (Ctrl-C)" >&2; exit 1; }
  if [[ -s "$STATE/demo.env" && -x "$PY" ]]; then   # its queues, in a RabbitMQ that may be shared
    (set -a; . "$STATE/demo.env"; set +a; "$PY" -m kinds.imap.demo reset) || true
  fi
  if [[ -d "$STATE" ]]; then bash scripts/services.sh stop "$STATE" >/dev/null; fi
  rm -rf "$STATE/mongo" "$STATE/mail" "$STATE/rabbit" "$STATE/log" "$STATE/runtime.pid" "$STATE/demo.env"
  echo "run: demo data removed ($STATE); 'bash scripts/run.sh' starts afresh"
  exit 0
fi
[[ $# -eq 0 ]] || { sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }

T0=$SECONDS
bash scripts/install.sh
mkdir -p /tmp/imap-runtime && chmod 0755 /tmp/imap-runtime
pid=""
were_up=0
bash scripts/services.sh status "$STATE" >/dev/null 2>&1 && were_up=1
cleanup() {
  if [[ -n "$pid" ]]; then   # SIGTERM: a clean stop, which also removes service:imap
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -f "$STATE/runtime.pid"
  fi
  ((were_up)) || bash "$REPO/scripts/services.sh" stop "$STATE" || true   # only what this run started
}
trap cleanup EXIT            # set before the services start: a start failing half-way is undone too
trap 'exit 130' INT TERM
bash scripts/services.sh start "$STATE"
set -a; . "$STATE/services.env"; set +a
printf 'RABBITMQ_HOST=%s\nMESSAGE_BROKER_PREFIX=%s\n' "$RABBITMQ_HOST" "$MESSAGE_BROKER_PREFIX" > "$STATE/demo.env"
bash scripts/mailserver.sh adduser "$MAIL_DIR" demo demo-password >/dev/null
export STANDALONE=true IMAP_RUNTIME_CONFIG="$REPO/configs.json" BIND_ADDRESS=${BIND_ADDRESS:-127.0.0.1}
PORT=${PORT:-4000}; export PORT
"$REPO/.venv/bin/imap-runtime" &
pid=$!
echo "$pid" > "$STATE/runtime.pid"
for _ in $(seq 1 120); do
  if [[ "$(curl -s --max-time 1 "http://127.0.0.1:$PORT/health" 2>/dev/null || true)" == ok ]]; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "imap-runtime exited; see the log above" >&2; pid=""; exit 1; }
  sleep 0.5
done
"$PY" -m kinds.imap.demo connect --user demo --password demo-password --imap-port "$IMAP_PORT" \
  --smtp-port "$SUBMISSION_PORT"
cat <<MSG

imap-runtime is running (standalone mode, http://127.0.0.1:$PORT/ready; ready in $((SECONDS - T0)) s).
The web console: http://127.0.0.1:$PORT/ (sign in with CONSOLE_PASSWORD, or the one-time password
printed above when it is not set).
The demo mailbox demo@localhost is connected. In another terminal:

  cd $REPO
  set -a; . $STATE/services.env; set +a
  .venv/bin/python -m kinds.imap.demo send --smtp-port $SMTP_PORT --subject "Where is my order?"
  .venv/bin/python -m kinds.imap.demo show

Each mail becomes a customer, a conversation and a stored message within about a second.
Ctrl-C stops everything this script started; 'bash scripts/run.sh --reset' then removes the demo's data.
MSG
wait "$pid"
