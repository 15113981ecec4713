#!/usr/bin/env bash
# Self-contained RabbitMQ node (Debian's rabbitmq-server 3.10 / Erlang 25) under DIR, loopback only.
# Adapted from the verified test bed; scripts/services.sh uses it only when nothing answers on 5672.
#
#   rabbit.sh start  DIR   write config (idempotent), start node detached, wait until AMQP is ready
#   rabbit.sh stop   DIR   graceful stop (SIGTERM), wait for exit, stop this instance's epmd
#   rabbit.sh status DIR   exit 0 if the node answers the AMQP handshake
#   rabbit.sh ctl    DIR ARGS...   rabbitmqctl against this node (e.g. 'ctl DIR list_queues')
#   rabbit.sh env    DIR   print ports/node (sourceable)
#
# Env (read at start, saved to DIR/rabbit.env): AMQP_PORT=10672 DIST_PORT=10673 EPMD_PORT=10369
#   RABBIT_NODENAME=rabbit-<basename DIR>@localhost.  User guest/guest (loopback-only by default).
# Nothing is read from /etc/rabbitmq or /var/lib/rabbitmq; runs as the calling user (root is fine).
set -euo pipefail

cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '2,/^set -e/p' "$0" | grep '^#'; exit 2; }
mkdir -p "$dir"; DIR="$(cd "$dir" && pwd)"; shift 2
RMQ_BIN=/usr/lib/rabbitmq/bin   # NOT /usr/sbin/rabbitmq-server: that Debian wrapper su's to 'rabbitmq'
                                # and writes /var/log/rabbitmq/startup_log

die() { echo "rabbit: $*" >&2; exit 1; }

load_env() {
  # shellcheck disable=SC1091
  if [[ -s "$DIR/rabbit.env" && "$cmd" != start ]]; then . "$DIR/rabbit.env"; fi
  AMQP_PORT=${AMQP_PORT:-10672}; DIST_PORT=${DIST_PORT:-10673}; EPMD_PORT=${EPMD_PORT:-10369}
  RABBIT_NODENAME=${RABBIT_NODENAME:-rabbit-$(basename "$DIR" | tr -c 'A-Za-z0-9_\n-' _)@localhost}
  export HOME="$DIR"                       # .erlang.cookie lives here (server and CLI share it)
  export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"   # don't read /etc/rabbitmq/rabbitmq-env.conf
  export RABBITMQ_NODENAME="$RABBIT_NODENAME" RABBITMQ_USE_LONGNAME=false
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT"
  export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config"
  export RABBITMQ_MNESIA_BASE="$DIR/mnesia" RABBITMQ_LOG_BASE="$DIR/log"
  export RABBITMQ_PID_FILE="$DIR/rabbit.pid" RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
  export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT"
  # the CLI tools (rabbitmqctl) are Erlang nodes too: keep their dist listener on loopback
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

amqp_ready() { # AMQP 0-9-1 protocol header -> server must answer with a method frame (0x01)
  local b
  b=$( (exec 3<>"/dev/tcp/127.0.0.1/$AMQP_PORT" && printf 'AMQP\0\0\011\001' >&3 &&
        timeout 2 head -c 1 <&3 | od -An -tx1) 2>/dev/null ) || return 1
  [[ "${b// /}" == 01 ]]
}

node_pid() {
  local p; p=$([[ -s "$DIR/rabbit.pid" ]] && cat "$DIR/rabbit.pid" || true)
  [[ -n "$p" && -r "/proc/$p/cmdline" ]] && tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF -- "-home $DIR " \
    && [[ "$(awk '{print $3}' "/proc/$p/stat")" != Z ]] && echo "$p" || true
}

wait_ready() { # t0 timeout_s
  until amqp_ready; do
    if (( SECONDS - $1 > $2 )); then tail -30 "$DIR/log/"*.log >&2; die "not ready on 127.0.0.1:$AMQP_PORT after $2 s (logs: $DIR/log)"; fi
    sleep 0.2
  done
}

start() {
  load_env
  [[ -x "$RMQ_BIN/rabbitmq-server" ]] || die "rabbitmq-server is not installed: run scripts/install.sh"
  local pid; pid=$(node_pid)
  if [[ -n "$pid" ]] && amqp_ready; then echo "rabbit: already running in $DIR (pid $pid)"; return 0; fi
  if [[ -n "$pid" ]]; then   # our node exists but is still booting (or hung): wait, don't start a 2nd
    wait_ready "$SECONDS" 120
    echo "rabbit: running in $DIR (pid $pid)"; return 0
  fi
  mkdir -p "$DIR/mnesia" "$DIR/log"
  : > "$DIR/rabbitmq-env.conf"
  [[ -s "$DIR/.erlang.cookie" ]] || { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/.erlang.cookie"; }
  chmod 0400 "$DIR/.erlang.cookie"
  echo "[]." > "$DIR/enabled_plugins"    # no management UI / prometheus listeners
  cat > "$DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
distribution.listener.interface = 127.0.0.1
distribution.listener.port_range.min = $DIST_PORT
distribution.listener.port_range.max = $DIST_PORT
loopback_users.guest = true
log.file.level = info
log.console = false
# a test box may have little free disk; default limit is 50MB
disk_free_limit.absolute = 50MB
EOF
  echo "[]." > "$DIR/advanced.config"
  cat > "$DIR/rabbit.env" <<EOF
AMQP_PORT=$AMQP_PORT
DIST_PORT=$DIST_PORT
EPMD_PORT=$EPMD_PORT
RABBIT_NODENAME=$RABBIT_NODENAME
AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F
EOF
  # own epmd on a private port, loopback only (the system one, if any, stays untouched)
  epmd -address 127.0.0.1 -port "$EPMD_PORT" -daemon
  local t0=$SECONDS
  "$RMQ_BIN/rabbitmq-server" -detached </dev/null >>"$DIR/log/startup.log" 2>&1
  wait_ready "$t0" 120
  echo "rabbit: running in $DIR (pid $(node_pid)) node=$RABBIT_NODENAME amqp=127.0.0.1:$AMQP_PORT ready in $((SECONDS - t0))s"
}

stop() {
  load_env
  local pid i; pid=$(node_pid)
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid"     # graceful shutdown (same as 'rabbitmqctl stop', without the CLI's ~1 s start-up)
    for ((i = 0; i < 300; i++)); do
      [[ -d "/proc/$pid" && "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || break
      sleep 0.1
    done
    [[ -d "/proc/$pid" && "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] && kill -KILL "$pid" 2>/dev/null || true
  fi
  epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true   # only succeeds when no node is registered
  rm -f "$DIR/rabbit.pid"
  echo "rabbit: stopped ($DIR)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) load_env; if amqp_ready; then echo "running (pid $(node_pid))"; exit 0; else echo "not ready"; exit 1; fi ;;
  ctl) load_env; exec "$RMQ_BIN/rabbitmqctl" -n "$RABBIT_NODENAME" "$@" ;;
  env) load_env; cat "$DIR/rabbit.env" ;;
  *) die "unknown command $cmd" ;;
esac
