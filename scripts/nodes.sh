#!/usr/bin/env bash
# Three imap-runtime nodes on one machine, sharing the mailboxes through leases in Redis (docs/scaling.md).
#
#   scripts/nodes.sh [N]      start local services and N nodes (default 3) on ports 4001..400N, NODE_ID node1..N,
#                             one log each in STATE/nodes/nodeK.log; Ctrl-C stops the nodes (SIGTERM: each releases
#                             its leases at once) and the services this script started
#
# While it runs, in another terminal:
#   .venv/bin/python -m runtime.admin owners           which node owns which mailbox
#   curl -s http://127.0.0.1:4001/ready                 a node's id, lease count, fair share
#   kill -9 <pid of a node>                             the others take its mailboxes over after the lease expires
# Environment: IMAP_RUNTIME_DEMO_DIR (STATE, default /tmp/imap-runtime/demo), BASE_PORT (4000), LEASE_SECONDS,
# and any other setting of the README.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE=${IMAP_RUNTIME_DEMO_DIR:-/tmp/imap-runtime/demo}
COUNT=${1:-3}
BASE_PORT=${BASE_PORT:-4000}
[[ "$COUNT" =~ ^[1-9][0-9]?$ ]] || { echo "usage: scripts/nodes.sh [N]   (1-99 nodes)" >&2; exit 2; }
cd "$REPO"
bash scripts/install.sh
mkdir -p /tmp/imap-runtime && chmod 0755 /tmp/imap-runtime
bash scripts/services.sh start "$STATE"
set -a; . "$STATE/services.env"; set +a
export STANDALONE=${STANDALONE:-true} IMAP_RUNTIME_CONFIG="$REPO/configs.json"
mkdir -p "$STATE/nodes"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  bash "$REPO/scripts/services.sh" stop "$STATE" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for k in $(seq 1 "$COUNT"); do
  PORT=$((BASE_PORT + k)) NODE_ID="node$k" "$REPO/.venv/bin/imap-runtime" >>"$STATE/nodes/node$k.log" 2>&1 &
  pids+=("$!")
done
for k in $(seq 1 "$COUNT"); do
  port=$((BASE_PORT + k))
  for _ in $(seq 1 120); do
    [[ "$(curl -s --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null || true)" == ok ]] && break
    kill -0 "${pids[$((k - 1))]}" 2>/dev/null || { echo "node$k exited: see $STATE/nodes/node$k.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "node$k: pid ${pids[$((k - 1))]}, http://127.0.0.1:$port (/ready shows its leases), log $STATE/nodes/node$k.log"
done
cat <<MSG

$COUNT nodes share the mailboxes (MESSAGE_BROKER_PREFIX='${MESSAGE_BROKER_PREFIX:-}', leases in Redis at
$REDIS_HOST:$REDIS_PORT). Connect mailboxes with kinds.imap.demo (see scripts/run.sh) or erxes, then:

  set -a; . $STATE/services.env; set +a
  .venv/bin/python -m runtime.admin owners

Ctrl-C stops every node.
MSG
wait
