#!/usr/bin/env bash
# Self-contained Dovecot (IMAP/IMAPS/LMTP/submission) + tiny SMTP relay for imap-runtime's tests and
# local runs (adapted from the verified test bed). Usually driven by scripts/services.sh.
#
#   mailserver.sh start   DIR [NUSERS]   generate config under DIR (idempotent), start, wait ready
#   mailserver.sh stop    DIR            stop dovecot + relay started from DIR (waits for exit)
#   mailserver.sh status  DIR            exit 0 if dovecot (and the relay, if it was started) run
#   mailserver.sh adduser DIR USER PASS  add/replace a user; on a running server it returns once Dovecot
#                                        accepts the new password (up to ~1 s: Dovecot re-reads the
#                                        passwd-file at most once a second)
#   mailserver.sh env     DIR            print the ports/paths of the instance (sourceable)
#
# Ports (env, read at 'start'; written to DIR/ports.env):
#   IMAP_PORT=10143 IMAPS_PORT=10993 LMTP_PORT=10024 SUBMISSION_PORT=10587 SMTP_PORT=10025
#   OAUTH_PORT=10980: where Dovecot's oauth2 passdb asks whether an XOAUTH2/OAUTHBEARER token is valid
#   (POST http://127.0.0.1:OAUTH_PORT/introspect, token=...; answer {"active": true, "username": ...}).
#   Nothing listens there unless a test starts one (tests/oauthserver.py); passwords work without it.
# Other env: MAIL_UID/MAIL_GID (uid that owns all mail; default 5000 as root, else your uid),
#   RELAY_PYTHON (python with aiosmtpd; default: $REPO/.venv/bin/python), NO_RELAY=1 to skip it,
#   MAIL_FSYNC=never|optimized|always (default optimized, Dovecot's default; never: ~1.5x faster),
#   IMAP_CLIENT_LIMIT=1 (set e.g. 100 when >100 IDLE sessions: each imap process otherwise uses one
#   of the uid's 128 inotify instances and IDLE silently degrades to IDLE_CHECK_INTERVAL polling; >1 also
#   puts imap-login in high-performance mode, else TLS sessions are capped at its 100 processes),
#   IDLE_CHECK_INTERVAL='30 secs', AUTH_FAILURE_DELAY=0, CATCHALL=user (relay: unknown rcpt -> user).
# Users file DIR/users: 'user:{PLAIN}pass::::::'  (default users user1..userN, password 'pass<N>');
#   keep names lowercase (Dovecot's auth_username_format=%Lu lowercases logins), DIR without spaces.
# Nothing is read from /etc/dovecot; every path (run, state, logs, mail, certs) is under DIR.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '2,/^set -e/p' "$0" | grep '^#'; exit 2; }
mkdir -p "$dir"; DIR="$(cd "$dir" && pwd)"
CONF="$DIR/dovecot.conf"

die() { echo "mailserver: $*" >&2; exit 1; }

# pid files are trusted only if the process really is ours (guards against PID reuse)
owns() { [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$2"; }
master_pid() {
  local p; p=$([[ -s "$DIR/run/master.pid" ]] && cat "$DIR/run/master.pid" || true)
  [[ -n "$p" ]] && owns "$p" "$CONF" && echo "$p" || true
}
# alive = exists and not a zombie (a container's PID 1 may reap orphans only seconds later)
alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$st" != Z ]]
}
relay_pid() {
  local p; p=$([[ -s "$DIR/smtp-relay.pid" ]] && cat "$DIR/smtp-relay.pid" || true)
  [[ -n "$p" ]] && owns "$p" "$DIR/run/lmtp" && echo "$p" || true
}

wait_port() { # host port timeout_s expected-greeting-prefix: wait for the server's banner
  local t0=$SECONDS
  while (( SECONDS - t0 < $3 )); do
    if ( exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 2 line <&3 && [[ "$line" == "$4"* ]] ) 2>/dev/null
    then return 0; fi
    sleep 0.1
  done
  return 1
}

write_config() {
  local imap=${IMAP_PORT:-10143} imaps=${IMAPS_PORT:-10993} lmtp=${LMTP_PORT:-10024}
  local sub=${SUBMISSION_PORT:-10587} smtp=${SMTP_PORT:-10025} oauth=${OAUTH_PORT:-10980}
  local uid gid
  if [[ $EUID -eq 0 ]]; then uid=${MAIL_UID:-5000}; gid=${MAIL_GID:-$uid}
  else uid=$(id -u); gid=$(id -g); fi
  local iname; iname="dovecot-$(basename "$DIR")-$imap"
  local internal_user login_user chroot_off=""
  if [[ $EUID -eq 0 ]]; then internal_user=dovecot; login_user=dovenull
  else  # rootless: everything runs as the caller, no chroot
    internal_user=$(id -un); login_user=$(id -un)
    local svc
    for svc in anvil imap-login submission-login pop3-login imap-urlauth-login managesieve-login; do
      chroot_off+="service $svc {"$'\n'"  chroot ="$'\n'"}"$'\n'
    done
  fi

  mkdir -p "$DIR"/{run,state,log,mail,ssl}
  # Dovecot's unprivileged processes (auth as 'dovecot', mail as $uid) must be able to
  # traverse DIR: mktemp -d / pytest tmp dirs are 0700 -> login fails with EACCES.
  chmod 0755 "$DIR" "$DIR/log" "$DIR/ssl"
  if [[ $EUID -eq 0 ]]; then chown "$uid:$gid" "$DIR/mail"; fi
  chmod 0700 "$DIR/mail"

  if [[ ! -s "$DIR/ssl/cert.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$DIR/ssl/key.pem" -out "$DIR/ssl/cert.pem" 2>/dev/null
    chmod 0600 "$DIR/ssl/key.pem"
  fi
  if [[ ! -e "$DIR/users" ]]; then
    local n=${NUSERS:-3} i
    : > "$DIR/users"
    for ((i = 1; i <= n; i++)); do echo "user$i:{PLAIN}pass$i::::::" >> "$DIR/users"; done
  fi
  chmod 0644 "$DIR/users"   # read by the auth process (runs as $internal_user)

  cat > "$CONF.tmp" <<EOF
# generated by mailserver.sh -- do not edit, regenerated at every start
instance_name = $iname
base_dir = $DIR/run
state_dir = $DIR/state
listen = 127.0.0.1
protocols = imap lmtp submission
hostname = localhost
postmaster_address = postmaster@localhost
log_path = $DIR/log/dovecot.log
info_log_path = $DIR/log/dovecot.log
debug_log_path = $DIR/log/dovecot.log
default_internal_user = $internal_user
default_internal_group = $(id -gn "$internal_user")
default_login_user = $login_user
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid

ssl = yes
ssl_cert = <$DIR/ssl/cert.pem
ssl_key = <$DIR/ssl/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
auth_mechanisms = ${AUTH_MECHANISMS:-plain login xoauth2 oauthbearer}
auth_cache_size = 0
# test bed: no escalating auth penalty (2s..15s per failed login from 127.0.0.1) and no
# fixed 2s failure delay, so negative-auth tests stay fast
login_trusted_networks = 127.0.0.0/8
auth_failure_delay = ${AUTH_FAILURE_DELAY:-0}

passdb {
  driver = passwd-file
  mechanisms = plain login none
  args = scheme=PLAIN username_format=%u $DIR/users
}
# OAuth2 bearer tokens (XOAUTH2, OAUTHBEARER) for IMAP and submission, checked by the token's issuer
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DIR/dovecot-oauth2.conf.ext
}
userdb {
  driver = passwd-file
  args = username_format=%u $DIR/users
  default_fields = uid=$uid gid=$gid home=$DIR/mail/%u
}
mail_location = maildir:~/Maildir
mail_fsync = ${MAIL_FSYNC:-optimized}
mailbox_idle_check_interval = ${IDLE_CHECK_INTERVAL:-30 secs}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = create
  }
}

protocol imap {
  mail_max_userip_connections = 1000
  imap_idle_notify_interval = 2 mins
}
submission_host = 127.0.0.1
submission_relay_host = 127.0.0.1
submission_relay_port = $smtp
submission_relay_trusted = no

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps
    ssl = yes
  }
  # with many sessions (IMAP_CLIENT_LIMIT > 1): high-performance mode. A login process proxies TLS for its
  # sessions' whole life; one process per session (the default) caps TLS sessions at process_limit (100).
  service_count = $([[ ${IMAP_CLIENT_LIMIT:-1} -gt 1 ]] && echo 0 || echo 1)
  client_limit = $([[ ${IMAP_CLIENT_LIMIT:-1} -gt 1 ]] && echo 1000 || echo 1)
  process_min_avail = $([[ ${IMAP_CLIENT_LIMIT:-1} -gt 1 ]] && echo 2 || echo 0)
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $sub
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
  unix_listener lmtp {
    mode = 0666
  }
}
service imap {
  process_limit = 1024
  # >1: one imap process serves many sessions (all virtual users share one uid), so IDLE
  # sessions don't each burn one of the uid's 128 inotify instances
  client_limit = ${IMAP_CLIENT_LIMIT:-1}
  service_count = $([[ ${IMAP_CLIENT_LIMIT:-1} -gt 1 ]] && echo 0 || echo 1)
}
$chroot_off
service anvil {
  client_limit = 2100
  unix_listener anvil-auth-penalty {
    mode = 0   # disables the escalating auth-failure penalty
  }
}
EOF
  cat > "$DIR/dovecot-oauth2.conf.ext" <<EOF
# generated by mailserver.sh: every token is introspected (auth_cache_size = 0: a revoked one fails at once)
introspection_mode = post
introspection_url = http://127.0.0.1:$oauth/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
EOF
  chmod 0644 "$DIR/dovecot-oauth2.conf.ext"
  mv "$CONF.tmp" "$CONF"
  if [[ $EUID -eq 0 ]]; then  # fail fast instead of "Temporary authentication failure"
    setpriv --reuid="$internal_user" --regid="$internal_user" --clear-groups test -r "$DIR/users" ||
      die "user '$internal_user' cannot read $DIR/users: every parent of $DIR needs o+x (pytest's /tmp/pytest-of-root is 0700: use --basetemp=/some/0755/dir)"
    setpriv --reuid="$uid" --regid="$gid" --clear-groups test -w "$DIR/mail" -a -x "$DIR/mail" ||
      die "uid $uid cannot write $DIR/mail: every parent of $DIR needs o+x"
  fi
  cat > "$DIR/ports.env" <<EOF
MAIL_DIR=$DIR
IMAP_PORT=$imap
IMAPS_PORT=$imaps
LMTP_PORT=$lmtp
LMTP_SOCKET=$DIR/run/lmtp
SUBMISSION_PORT=$sub
SMTP_PORT=$smtp
OAUTH_PORT=$oauth
CA_CERT=$DIR/ssl/cert.pem
USERS_FILE=$DIR/users
EOF
}

start() {
  command -v dovecot >/dev/null || die "dovecot is not installed: run scripts/install.sh"
  local pid; pid=$(master_pid)
  if alive "$pid"; then
    if [[ "${NO_RELAY:-0}" == 1 ]] || alive "$(relay_pid)"; then
      echo "mailserver: already running in $DIR (pid $pid)"; return 0
    fi
    # dovecot up, relay gone (crashed/killed): start just the relay
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
    start_relay
    echo "mailserver: running in $DIR (pid $pid), relay restarted on $SMTP_PORT"; return 0
  fi
  stop >/dev/null   # leftovers of a crashed instance (orphaned children, relay)
  write_config
  # stale sockets from an earlier instance (e.g. a listener since disabled) make processes
  # block on connect -> always start from an empty base_dir
  rm -rf "$DIR/run"; mkdir -p "$DIR/run"
  # shellcheck disable=SC1091
  . "$DIR/ports.env"
  doveconf -c "$CONF" -n >/dev/null 2>"$DIR/log/doveconf.err" || { cat "$DIR/log/doveconf.err" >&2; die "bad config"; }
  # Foreground master (-F) in its own session/process group: 'stop' can then end every
  # process of this instance by group id, including imap/log processes orphaned by a
  # crashed master. stdio detached: a daemon would otherwise hold a caller's stdout pipe.
  setsid dovecot -F -c "$CONF" </dev/null >>"$DIR/log/dovecot.stderr" 2>&1 &
  local t0=$SECONDS
  until [[ -s "$DIR/run/master.pid" ]]; do
    (( SECONDS - t0 < 10 )) || { cat "$DIR/log/dovecot.stderr" >&2; die "dovecot failed to start"; }
    sleep 0.05
  done
  ps -o pgid= -p "$(master_pid)" | tr -d ' ' > "$DIR/dovecot.pgid"
  wait_port 127.0.0.1 "$IMAP_PORT" 20 "* OK" || { tail -20 "$DIR/log/dovecot.log" "$DIR/log/dovecot.stderr" >&2; die "IMAP not ready on $IMAP_PORT"; }
  if [[ "${NO_RELAY:-0}" != 1 ]]; then start_relay; fi
  wait_port 127.0.0.1 "$SUBMISSION_PORT" 10 "220" || die "submission not ready on $SUBMISSION_PORT"
  echo "mailserver: running in $DIR (pid $(master_pid)) imap=$IMAP_PORT imaps=$IMAPS_PORT lmtp=$LMTP_PORT submission=$SUBMISSION_PORT smtp=$SMTP_PORT"
}

start_relay() { # needs the ports.env variables
  local py=${RELAY_PYTHON:-$REPO/.venv/bin/python}
  if ! alive "$(relay_pid)"; then
    "$py" -c 'import aiosmtpd' 2>/dev/null ||
      die "relay python $py has no aiosmtpd: run scripts/install.sh (or set RELAY_PYTHON)"
    # own session too: a Ctrl-C meant for the caller must not take the relay down
    setsid "$py" "$HERE/smtp_relay.py" --port "$SMTP_PORT" --lmtp "$LMTP_SOCKET" \
      --users "$USERS_FILE" --cert "$DIR/ssl/cert.pem" --key "$DIR/ssl/key.pem" \
      ${CATCHALL:+--catchall "$CATCHALL"} \
      </dev/null >>"$DIR/log/smtp-relay.log" 2>&1 &
    echo $! > "$DIR/smtp-relay.pid"
  fi
  wait_port 127.0.0.1 "$SMTP_PORT" 20 "220" || { tail -20 "$DIR/log/smtp-relay.log" >&2; die "SMTP relay not ready on $SMTP_PORT"; }
}

group_alive() { # any non-zombie process in process group $1
  [[ -n "${1:-}" ]] && ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'
}

stop() {
  local pid rp pg i; pid=$(master_pid); rp=$(relay_pid)
  pg=$([[ -s "$DIR/dovecot.pgid" ]] && cat "$DIR/dovecot.pgid" || true)
  if alive "$rp"; then kill "$rp" 2>/dev/null || true; fi
  if alive "$pid"; then
    kill -TERM "$pid"   # == 'doveadm -c DIR/dovecot.conf stop'; master exits in ~1 s
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
  fi
  # imap processes serving IDLE clients outlive the master by ~10 s (and forever after a
  # master crash) -> SIGTERM the instance's process group: clients get
  # "* BYE Server shutting down." at once
  if group_alive "$pg"; then
    kill -TERM -- "-$pg" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do group_alive "$pg" || break; sleep 0.1; done
    group_alive "$pg" && { kill -KILL -- "-$pg" 2>/dev/null || true; }
  fi
  for ((i = 0; i < 50; i++)); do alive "$rp" || break; sleep 0.1; done
  alive "$rp" && { kill -KILL "$rp" 2>/dev/null || true; }
  rm -f "$DIR/smtp-relay.pid" "$DIR/dovecot.pgid"
  echo "mailserver: stopped ($DIR)"
}

adduser() {
  local user=${3:?USER} pass=${4:?PASS}
  [[ "$user$pass" != *:* ]] || die "':' not allowed"
  [[ -d "$DIR" ]] || mkdir -p "$DIR"
  exec 8>"$DIR/users.lock"   # concurrent addusers must not lose each other's lines
  flock -w 10 8 || die "$DIR/users.lock busy for 10 s"
  [[ -e "$DIR/users" ]] || : > "$DIR/users"
  local old; old=$(stat -c %Y "$DIR/users")
  { grep -v "^$user:" "$DIR/users" || true; echo "$user:{PLAIN}$pass::::::"; } > "$DIR/users.tmp.$$"
  mv "$DIR/users.tmp.$$" "$DIR/users"; chmod 0644 "$DIR/users"
  # Dovecot re-reads the passwd-file only when its mtime (whole seconds) or size changed, and stats it
  # at most once a second: give every change a new mtime, then wait until the auth process sees it,
  # so that when adduser returns the user can log in with this password.
  local now; now=$(date +%s)
  touch -d "@$(( now > old ? now : old + 1 ))" "$DIR/users"
  if [[ -s "$CONF" ]] && alive "$(master_pid)"; then
    local t0=$SECONDS
    until doveadm -c "$CONF" auth test -x service=imap "$user" "$pass" >/dev/null 2>&1; do
      (( SECONDS - t0 < 5 )) || die "dovecot did not accept the new password of $user within 5 s"
      sleep 0.05
    done
  fi
  echo "mailserver: user $user set"
}

case "$cmd" in
  start) NUSERS=${3:-${NUSERS:-3}} start ;;
  stop) stop ;;
  status)
    pid=$(master_pid)
    alive "$pid" || { echo "stopped"; exit 1; }
    if [[ -e "$DIR/smtp-relay.pid" ]] && ! alive "$(relay_pid)"; then
      echo "dovecot running (pid $pid), SMTP relay dead"; exit 1
    fi
    echo "running (pid $pid)"; exit 0 ;;
  adduser) adduser "$@" ;;
  env) cat "$DIR/ports.env" ;;
  *) die "unknown command $cmd" ;;
esac
