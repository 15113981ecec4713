#!/usr/bin/env bash
# Run the servers imap-runtime needs, loopback only, with all state under one folder.
#
#   scripts/services.sh start  STATE_DIR   start what is not running yet, wait until each is ready,
#                                          write STATE_DIR/services.env (idempotent: a 2nd start restarts nothing)
#   scripts/services.sh stop   STATE_DIR   stop only what 'start' started (safe to repeat)
#   scripts/services.sh status STATE_DIR   one line per server; exit 0 when all are up
#   scripts/services.sh env    STATE_DIR   print STATE_DIR/services.env (sourceable KEY=VALUE lines:
#       MONGO_URL RABBITMQ_HOST REDIS_HOST REDIS_PORT IMAP_PORT IMAPS_PORT SUBMISSION_PORT SMTP_PORT
#       OAUTH_PORT LMTP_PORT CA_CERT USERS_FILE MAIL_DIR
#       CYRUS_IMAP_PORT CYRUS_IMAPS_PORT CYRUS_CA_CERT CYRUS_DIR)
#
# Servers (env read at 'start'; while they run, a later 'start' keeps the first values and refuses
# conflicting ones):
#   SecantusDB (MongoDB wire)  127.0.0.1:$MONGO_PORT (27017); data in STATE_DIR/mongo, log in STATE_DIR/log
#   Dovecot + SMTP relay       scripts/mailserver.sh in STATE_DIR/mail: IMAP_PORT=10143 IMAPS_PORT=10993
#                              LMTP_PORT=10024 SUBMISSION_PORT=10587 SMTP_PORT=10025; NUSERS=3 users
#                              user1/pass1..; IMAP_CLIENT_LIMIT is passed through; OAUTH_PORT=10980:
#                              where Dovecot introspects XOAUTH2 tokens (tests/oauthserver.py listens)
#   RabbitMQ                   127.0.0.1:$SYSTEM_AMQP_PORT (5672) when it answers AMQP (then never
#                              stopped by us), else a private node (scripts/rabbit.sh, STATE_DIR/rabbit)
#                              on $PRIVATE_AMQP_PORT (10672; +1 Erlang distribution, +2 its own epmd)
#   Redis                      127.0.0.1:$SYSTEM_REDIS_PORT (6379) when it answers PING (never stopped
#                              by us), else a private redis-server on $PRIVATE_REDIS_PORT (6379), no persistence;
#                              PRIVATE_REDIS=1: always the private one (scripts/run.sh: nothing of the demo
#                              lands in a Redis that erxes may share)
#   Cyrus IMAP 3.6             scripts/cyrus.sh in STATE_DIR/cyrus (a second, independent IMAP server):
#                              CYRUS_IMAP_PORT=30143 (STARTTLS) CYRUS_IMAPS_PORT=30993; users via
#                              'cyrus.sh adduser STATE_DIR/cyrus USER PASS'; folders INBOX.X, separator '.'
# STATE_DIR is created 0755; it and every parent must be traversable by user 'dovecot' (so not
# pytest's 0700 temp dirs): use e.g. /tmp/imap-runtime/NAME. Needs scripts/install.sh first.
set -euo pipefail
umask 022
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
VPY=$REPO/.venv/bin/python
SECANTUSD=$REPO/.venv/bin/secantusd-py

die() { echo "services: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" && $# -eq 2 ]] || usage
case "$cmd" in start|stop|status|env) ;; *) usage ;; esac
[[ "$dir" == /* ]] || dir="$PWD/$dir"
[[ "$dir" =~ ^[A-Za-z0-9/._-]+$ ]] || die "STATE_DIR may only contain A-Z a-z 0-9 / . _ - (no spaces): '$dir'"
if [[ "$cmd" == start ]]; then
  mkdir -p "$dir"            # new parents get 0755 (umask 022)
  chmod 0755 "$dir"
elif [[ ! -d "$dir" ]]; then
  case "$cmd" in
    stop) echo "services: nothing to stop ($dir does not exist)"; exit 0 ;;
    status) echo "services: not started ($dir does not exist)"; exit 1 ;;
    env) die "$dir does not exist: run 'scripts/services.sh start $dir' first" ;;
  esac
fi
STATE="$(cd "$dir" && pwd -P)"
ENVFILE=$STATE/services.env
CONFIG=$STATE/config.env
MONGO_MATCH="--storage-path $STATE/mongo --sync-on-commit"

# ---- process and port helpers ----------------------------------------------------------------
# alive = exists and not a zombie
alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$st" != Z ]]
}
# pid files are trusted only when /proc/PID/cmdline shows the process really is ours (PID reuse)
cmdline() { # PID -> $CMDLINE (arguments joined by spaces); builtins only: cheap enough to scan /proc
  local -a a=()
  CMDLINE=""
  mapfile -d '' a 2>/dev/null < "/proc/$1/cmdline" || return 1
  CMDLINE="${a[*]}"
}
owns() { cmdline "$1" && [[ "$CMDLINE" == *"$2"* ]]; }
readpid() { [[ -s "$1" ]] && tr -dc '0-9' < "$1" || true; }

# shellcheck disable=SC2016  # the inner bash expands $1
port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }
# shellcheck disable=SC2016
amqp_answers() { # AMQP 0-9-1 protocol header -> a broker answers with a method frame (type 0x01)
  local b
  b=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "AMQP\0\0\011\001" >&3 &&
        head -c 1 <&3 | od -An -tx1' _ "$1" 2>/dev/null) || return 1
  [[ "${b// /}" == 01 ]]
}
# shellcheck disable=SC2016
redis_answers() {
  local r
  r=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "PING\r\n" >&3 &&
        head -c 5 <&3' _ "$1" 2>/dev/null) || return 1
  [[ "$r" == "+PONG" ]]
}
wait_for() { # timeout_s description command...: poll every 0.1 s
  local t=$1 what=$2 t0=$SECONDS; shift 2
  until "$@"; do
    (( SECONDS - t0 < t )) || { echo "services: $what: not ready after $t s" >&2; return 1; }
    sleep 0.1
  done
}

# SecantusDB: pid file first, else look for our exact command line (a crashed run may have lost it)
mongo_pid() {
  local p f
  p=$(readpid "$STATE/mongo.pid")
  if [[ -n "$p" ]] && alive "$p" && owns "$p" "$MONGO_MATCH"; then echo "$p"; return; fi
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    cmdline "$p" && [[ "$CMDLINE" == *secantusd-py*"$MONGO_MATCH"* ]] && alive "$p" &&
      { echo "$p"; return; }
  done
  return 0
}
mongo_ping() { # port timeout_s [pid]: 0 when a ping succeeds; fails early when pid exits
  "$VPY" - "$@" <<'EOF'
import os, sys, time
from pymongo import MongoClient
port, timeout = int(sys.argv[1]), float(sys.argv[2])
pid = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else 0

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + timeout
while True:
    client = MongoClient(f"mongodb://127.0.0.1:{port}/?retryWrites=false",
                         serverSelectionTimeoutMS=1000, connectTimeoutMS=1000)
    try:
        client.admin.command("ping")
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
        err = e
    finally:
        client.close()
    if pid and not alive(pid):
        print(f"secantusd (pid {pid}) exited", file=sys.stderr)
        sys.exit(2)
    if time.monotonic() > deadline:
        print(f"no ping answer on 127.0.0.1:{port} after {timeout:g} s: {err}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
EOF
}

rabbit_pid() { # our private node (rabbit.sh's pid file + '-home DIR' on the command line)
  local p; p=$(readpid "$STATE/rabbit/rabbit.pid")
  [[ -n "$p" ]] && alive "$p" && owns "$p" "-home $STATE/rabbit " && echo "$p" || true
}
is_our_redis() { # redis-server retitles itself 'redis-server HOST:PORT'; ours runs in STATE (--dir)
  cmdline "$1" && [[ "$CMDLINE" == redis-server\ * ]] &&
    [[ "$(readlink "/proc/$1/cwd" 2>/dev/null)" == "$STATE" ]] && alive "$1"
}
redis_pid() { # its pid file first, else look for a redis-server whose cwd is STATE
  local p f
  p=$(readpid "$STATE/redis.pid")
  if [[ -n "$p" ]] && is_our_redis "$p"; then echo "$p"; return; fi
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    is_our_redis "$p" && { echo "$p"; return; }
  done
  return 0
}
mail_running() { bash "$HERE/mailserver.sh" status "$STATE/mail" >/dev/null 2>&1; }
cyrus_running() { bash "$HERE/cyrus.sh" status "$STATE/cyrus" >/dev/null 2>&1; }

kill_wait() { # pid name [sent]: SIGTERM (unless 'sent' already), wait up to 10 s, then SIGKILL
  local pid=$1 i
  alive "$pid" || return 0
  # a 2nd SIGTERM is not harmless: SecantusDB restarts its ~2 s shutdown wait
  [[ "${3:-}" == sent ]] || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || return 0; sleep 0.1; done
  echo "services: $2 (pid $pid) still running 10 s after SIGTERM: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$pid" || return 0; sleep 0.1; done
  echo "services: $2 (pid $pid) did not exit after SIGKILL" >&2; return 1
}

lock() { # serialize start/stop on one STATE_DIR; children get fd 9 closed (9>&-)
  exec 9>"$STATE/.lock"
  flock -n 9 && return 0
  echo "services: waiting for another services.sh on $STATE ..." >&2
  flock -w 300 9 || die "another services.sh still holds $STATE/.lock after 300 s"
}

# ---- configuration ---------------------------------------------------------------------------
KEYS=(MONGO_PORT IMAP_PORT IMAPS_PORT LMTP_PORT SUBMISSION_PORT SMTP_PORT NUSERS
      SYSTEM_AMQP_PORT PRIVATE_AMQP_PORT SYSTEM_REDIS_PORT PRIVATE_REDIS_PORT OAUTH_PORT
      CYRUS_IMAP_PORT CYRUS_IMAPS_PORT)
declare -A DEFAULT=([MONGO_PORT]=27017 [IMAP_PORT]=10143 [IMAPS_PORT]=10993 [LMTP_PORT]=10024
  [SUBMISSION_PORT]=10587 [SMTP_PORT]=10025 [NUSERS]=3 [SYSTEM_AMQP_PORT]=5672
  [PRIVATE_AMQP_PORT]=10672 [SYSTEM_REDIS_PORT]=6379 [PRIVATE_REDIS_PORT]=6379 [OAUTH_PORT]=10980
  [CYRUS_IMAP_PORT]=30143 [CYRUS_IMAPS_PORT]=30993)
declare -A PREV=() CFG=()
read_kv() { # file assoc-array-name
  local k v; local -n into=$2
  [[ -r "$1" ]] || return 0
  # shellcheck disable=SC2034  # 'into' is a nameref
  while IFS='=' read -r k v; do [[ -n "$k" && "$k" != \#* ]] && into["$k"]=$v; done < "$1"
}

anything_of_ours_alive() {
  [[ -n "$(mongo_pid)" || -n "$(rabbit_pid)" || -n "$(redis_pid)" ]] || mail_running || cyrus_running
}

resolve_config() {
  read_kv "$CONFIG" PREV
  local k v conflict=()
  for k in "${KEYS[@]}"; do
    v=${!k:-}
    if [[ -n "$v" ]]; then
      [[ -n "${PREV[$k]:-}" && "${PREV[$k]}" != "$v" ]] && conflict+=("$k=$v (running: ${PREV[$k]})")
    else
      v=${PREV[$k]:-${DEFAULT[$k]}}
    fi
    [[ "$v" =~ ^[0-9]+$ ]] || die "$k must be a number, got '$v'"
    CFG[$k]=$v
  done
  if ((${#conflict[@]})) && anything_of_ours_alive; then
    die "$STATE is already running with other settings: ${conflict[*]}; run 'scripts/services.sh stop $STATE' first"
  fi
  for k in "${KEYS[@]}"; do echo "$k=${CFG[$k]}"; done > "$CONFIG.tmp"
  mv "$CONFIG.tmp" "$CONFIG"
}

check_traversable() { # dovecot's auth (user dovecot) and mail (uid 5000) processes need o+x on every parent
  [[ $EUID -eq 0 ]] || return 0
  local p=$STATE m
  while [[ "$p" != / ]]; do
    m=$(stat -c %a "$p")
    (( 8#$m & 1 )) || die "$p is mode $m: user dovecot must traverse every parent of $STATE (chmod o+x it, or use a STATE_DIR under a 0755 folder such as /tmp/imap-runtime/)"
    p=$(dirname "$p")
  done
}

# ---- start -----------------------------------------------------------------------------------
NOTES=()
start_mongo() {
  local port=${CFG[MONGO_PORT]} pid
  pid=$(mongo_pid)
  if [[ -n "$pid" ]]; then
    echo "$pid" > "$STATE/mongo.pid"
    mongo_ping "$port" 30 "$pid" || die "SecantusDB (pid $pid) runs but does not answer on 127.0.0.1:$port (log: $STATE/log/secantusd.log)"
    NOTES+=("mongo :$port (running)"); return
  fi
  rm -f "$STATE/mongo.pid"   # stale (crashed run, or the pid now belongs to another process)
  port_open "$port" && die "127.0.0.1:$port is already taken by something else (not a SecantusDB of $STATE): stop it or set MONGO_PORT"
  [[ -x "$SECANTUSD" ]] || die "$SECANTUSD missing: run scripts/install.sh"
  mkdir -p "$STATE/mongo" "$STATE/log"
  # own session/process group, stdio detached (a daemon must not hold a caller's stdout pipe)
  setsid "$SECANTUSD" --host 127.0.0.1 --port "$port" --storage-path "$STATE/mongo" \
    --sync-on-commit --log-level WARNING </dev/null >>"$STATE/log/secantusd.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" > "$STATE/mongo.pid"
  if ! mongo_ping "$port" 30 "$pid"; then
    echo "--- tail $STATE/log/secantusd.log" >&2; tail -20 "$STATE/log/secantusd.log" >&2
    kill_wait "$pid" secantusd || true
    rm -f "$STATE/mongo.pid"
    die "SecantusDB failed to start on 127.0.0.1:$port (it exits, or no ping answer within 30 s); log: $STATE/log/secantusd.log"
  fi
  owns "$pid" "$MONGO_MATCH" || die "internal: pid $pid is not the SecantusDB just started"
  NOTES+=("mongo :$port (started)")
}

start_mail() {
  touch "$STATE/mail.started"   # recorded first: 'stop' cleans up even after a failed start
  local out
  out=$(IMAP_PORT=${CFG[IMAP_PORT]} IMAPS_PORT=${CFG[IMAPS_PORT]} LMTP_PORT=${CFG[LMTP_PORT]} \
    SUBMISSION_PORT=${CFG[SUBMISSION_PORT]} SMTP_PORT=${CFG[SMTP_PORT]} NUSERS=${CFG[NUSERS]} \
    OAUTH_PORT=${CFG[OAUTH_PORT]} \
    RELAY_PYTHON="$VPY" bash "$HERE/mailserver.sh" start "$STATE/mail" 9>&-) ||
    { [[ -n "$out" ]] && echo "$out" >&2; die "mail servers failed to start (logs: $STATE/mail/log)"; }
  if [[ "$out" == *"already running"* ]]; then NOTES+=("dovecot+relay (running)")
  else NOTES+=("dovecot+relay (started)"); fi
}

start_cyrus() { # Cyrus IMAP beside Dovecot (scripts/install.sh runs 'scripts/cyrus.sh install')
  touch "$STATE/cyrus.started"
  local out
  out=$(CYRUS_IMAP_PORT=${CFG[CYRUS_IMAP_PORT]} CYRUS_IMAPS_PORT=${CFG[CYRUS_IMAPS_PORT]} NUSERS=0 \
    CHECK_PYTHON="$VPY" bash "$HERE/cyrus.sh" start "$STATE/cyrus" 9>&-) ||
    { [[ -n "$out" ]] && echo "$out" >&2; die "Cyrus failed to start (logs: $STATE/cyrus/log; installed? scripts/install.sh)"; }
  if [[ "$out" == *"already running"* ]]; then NOTES+=("cyrus :${CFG[CYRUS_IMAP_PORT]} (running)")
  else NOTES+=("cyrus :${CFG[CYRUS_IMAP_PORT]} (started)"); fi
}

AMQP_PORT_USED=""
start_rabbit() {
  local priv=${CFG[PRIVATE_AMQP_PORT]} sys=${CFG[SYSTEM_AMQP_PORT]}
  local renv=(AMQP_PORT="$priv" DIST_PORT=$((priv + 1)) EPMD_PORT=$((priv + 2)) RABBIT_NODENAME="rabbit-imap-$priv@localhost")
  if [[ -n "$(rabbit_pid)" ]]; then
    echo "$priv" > "$STATE/rabbit.started"
    env "${renv[@]}" bash "$HERE/rabbit.sh" start "$STATE/rabbit" >/dev/null 9>&- ||
      die "private RabbitMQ in $STATE/rabbit runs but is not ready on $priv"
    AMQP_PORT_USED=$priv; NOTES+=("rabbitmq :$priv (private, running)"); return
  fi
  if [[ -e "$STATE/rabbit.started" ]]; then   # our node died: clean up its epmd before deciding again
    env "${renv[@]}" bash "$HERE/rabbit.sh" stop "$STATE/rabbit" >/dev/null 2>&1 9>&- || true
    rm -f "$STATE/rabbit.started"
  fi
  if amqp_answers "$sys"; then
    AMQP_PORT_USED=$sys; NOTES+=("rabbitmq :$sys (shared)"); return
  fi
  port_open "$priv" && die "nothing answers AMQP on 127.0.0.1:$sys and 127.0.0.1:$priv is taken by something else: set PRIVATE_AMQP_PORT"
  echo "$priv" > "$STATE/rabbit.started"
  env "${renv[@]}" bash "$HERE/rabbit.sh" start "$STATE/rabbit" 9>&- ||
    die "private RabbitMQ failed to start (logs: $STATE/rabbit/log)"
  AMQP_PORT_USED=$priv; NOTES+=("rabbitmq :$priv (private, started)")
}

REDIS_PORT_USED=""
start_redis() {
  local priv=${CFG[PRIVATE_REDIS_PORT]} sys=${CFG[SYSTEM_REDIS_PORT]} pid
  pid=$(redis_pid)
  if [[ -n "$pid" ]]; then
    echo "$priv" > "$STATE/redis.started"; echo "$pid" > "$STATE/redis.pid"
    wait_for 10 "private redis (pid $pid) on 127.0.0.1:$priv" redis_answers "$priv" || die "private redis does not answer PING"
    REDIS_PORT_USED=$priv; NOTES+=("redis :$priv (private, running)"); return
  fi
  rm -f "$STATE/redis.started" "$STATE/redis.pid"
  if [[ "${PRIVATE_REDIS:-0}" != 1 ]] && redis_answers "$sys"; then
    REDIS_PORT_USED=$sys; NOTES+=("redis :$sys (shared)"); return
  fi
  port_open "$priv" && die "a private redis-server needs 127.0.0.1:$priv, which something else holds: set PRIVATE_REDIS_PORT"
  command -v redis-server >/dev/null || die "redis-server is not installed: run scripts/install.sh"
  mkdir -p "$STATE/log"
  echo "$priv" > "$STATE/redis.started"
  redis-server --bind 127.0.0.1 --port "$priv" --save "" --appendonly no --daemonize yes \
    --pidfile "$STATE/redis.pid" --dir "$STATE" --logfile "$STATE/log/redis.log" </dev/null 9>&- ||
    die "redis-server failed (log: $STATE/log/redis.log)"
  wait_for 10 "private redis on 127.0.0.1:$priv" redis_answers "$priv" ||
    { tail -20 "$STATE/log/redis.log" >&2; die "private redis did not answer PING within 10 s"; }
  wait_for 5 "redis pid file $STATE/redis.pid" test -s "$STATE/redis.pid" || true
  REDIS_PORT_USED=$priv; NOTES+=("redis :$priv (private, started)")
}

write_env() {
  local m=$STATE/mail/ports.env
  [[ -s "$m" ]] || die "$m missing"
  (
    # shellcheck disable=SC1090
    . "$m"
    cat <<EOF
MONGO_URL=mongodb://127.0.0.1:${CFG[MONGO_PORT]}/imap_runtime?retryWrites=false
RABBITMQ_HOST=amqp://guest:guest@127.0.0.1:$AMQP_PORT_USED/%2F
REDIS_HOST=127.0.0.1
REDIS_PORT=$REDIS_PORT_USED
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
SUBMISSION_PORT=$SUBMISSION_PORT
SMTP_PORT=$SMTP_PORT
OAUTH_PORT=$OAUTH_PORT
LMTP_PORT=$LMTP_PORT
CA_CERT=$CA_CERT
USERS_FILE=$USERS_FILE
MAIL_DIR=$MAIL_DIR
EOF
    # shellcheck disable=SC1091
    . "$STATE/cyrus/ports.env"
    printf 'CYRUS_IMAP_PORT=%s\nCYRUS_IMAPS_PORT=%s\nCYRUS_CA_CERT=%s\nCYRUS_DIR=%s\n' \
      "$CYRUS_IMAP_PORT" "$CYRUS_IMAPS_PORT" "$CYRUS_CA_CERT" "$CYRUS_DIR"
  ) > "$ENVFILE.tmp"
  mv "$ENVFILE.tmp" "$ENVFILE"
}

start() {
  local t0; t0=$(now)
  check_traversable
  lock
  resolve_config
  start_mongo
  start_mail
  start_cyrus
  start_rabbit
  start_redis
  write_env
  local notes; printf -v notes '%s, ' "${NOTES[@]}"
  echo "services: up in $(since "$t0") s: ${notes%, }; env: $ENVFILE"
}

# ---- stop ------------------------------------------------------------------------------------
stop() {
  lock
  local pid mpid
  # SecantusDB needs ~2 s to shut down (it joins its accept thread with a 2 s timeout): SIGTERM
  # it first, stop the rest meanwhile, wait for it last
  mpid=$(mongo_pid)
  [[ -n "$mpid" ]] && kill -TERM "$mpid" 2>/dev/null
  pid=$(redis_pid)   # ours for sure: a redis-server running in STATE (a shared one is never touched)
  [[ -n "$pid" ]] && kill_wait "$pid" redis-server
  rm -f "$STATE/redis.started" "$STATE/redis.pid"
  if [[ -e "$STATE/rabbit.started" || -n "$(rabbit_pid)" ]]; then
    bash "$HERE/rabbit.sh" stop "$STATE/rabbit" >/dev/null 9>&-   # ports/node from rabbit/rabbit.env
    rm -f "$STATE/rabbit.started"
  fi
  if [[ -e "$STATE/mail.started" ]]; then
    bash "$HERE/mailserver.sh" stop "$STATE/mail" >/dev/null 9>&-
    rm -f "$STATE/mail.started"
  fi
  if [[ -e "$STATE/cyrus.started" ]]; then
    bash "$HERE/cyrus.sh" stop "$STATE/cyrus" >/dev/null 9>&-
    rm -f "$STATE/cyrus.started"
  fi
  [[ -n "$mpid" ]] && kill_wait "$mpid" secantusd sent
  rm -f "$STATE/mongo.pid" "$ENVFILE" "$CONFIG"
  echo "services: stopped ($STATE)"
}

# ---- status ----------------------------------------------------------------------------------
status() {
  declare -A E=(); read_kv "$ENVFILE" E
  [[ -n "${E[MONGO_URL]:-}" ]] || { echo "services: not started ($ENVFILE missing)"; return 1; }
  local ok=0 pid port
  pid=$(mongo_pid); port=${E[MONGO_URL]#mongodb://127.0.0.1:}; port=${port%%/*}
  if [[ -n "$pid" ]] && mongo_ping "$port" 3 "$pid" 2>/dev/null; then echo "mongo:    up (pid $pid, 127.0.0.1:$port)"
  else echo "mongo:    DOWN (127.0.0.1:$port)"; ok=1; fi
  if mail_running; then echo "mail:     up ($(bash "$HERE/mailserver.sh" status "$STATE/mail"), imap 127.0.0.1:${E[IMAP_PORT]})"
  else echo "mail:     DOWN ($STATE/mail)"; ok=1; fi
  if cyrus_running; then echo "cyrus:    up (imap 127.0.0.1:${E[CYRUS_IMAP_PORT]:-?})"
  else echo "cyrus:    DOWN ($STATE/cyrus)"; ok=1; fi
  port=${E[RABBITMQ_HOST]#*@127.0.0.1:}; port=${port%%/*}
  if amqp_answers "$port"; then echo "rabbitmq: up (127.0.0.1:$port$([[ -e "$STATE/rabbit.started" ]] && echo ", private" || echo ", shared"))"
  else echo "rabbitmq: DOWN (127.0.0.1:$port)"; ok=1; fi
  port=${E[REDIS_PORT]}
  if redis_answers "$port"; then echo "redis:    up (127.0.0.1:$port$([[ -e "$STATE/redis.started" ]] && echo ", private" || echo ", shared"))"
  else echo "redis:    DOWN (127.0.0.1:$port)"; ok=1; fi
  return $ok
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) [[ -s "$ENVFILE" ]] || die "$ENVFILE missing: run 'scripts/services.sh start $STATE' first"; cat "$ENVFILE" ;;
esac
