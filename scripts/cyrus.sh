#!/usr/bin/env bash
# A private Cyrus IMAP 3.6 instance (Debian 12 package cyrus-imapd), everything under one folder, 127.0.0.1 only.
#
#   cyrus.sh install                 apt-get cyrus-common + sasl2-bin; cyrus-imapd only unpacked (see below)
#   cyrus.sh start   DIR [NUSERS]    generate the config under DIR (idempotent), start master, create users
#   cyrus.sh stop    DIR             stop the master started from DIR (by its pid / process group)
#   cyrus.sh status  DIR             exit 0 if running
#   cyrus.sh adduser DIR USER PASS   SASL secret + mailbox user.USER (needs a running instance)
#   cyrus.sh env     DIR             the ports/paths of the instance (sourceable)
#
# Env at start: CYRUS_IMAP_PORT=30143 CYRUS_IMAPS_PORT=30993 (LMTP: the unix socket DIR/run/socket/lmtp),
# IDLED=1 (0: no idled in DAEMON{}, as Debian ships cyrus.conf: IDLE then polls every imapidlepoll, 60 s),
# IMAPIDLEPOLL (imapd.conf's imapidlepoll; unset: Cyrus's default 60s), ALTNAMESPACE=no, UNIXHIERARCHYSEP=no
# (Debian's defaults: folders are INBOX.X, separator '.').
# Users userN / passN (N=1..NUSERS), admin 'cyrusadm' / 'adminpass'. Every user gets protocol telemetry in
# DIR/config/log/USER/<pid> (Cyrus's own per-user session log: commands and responses).
set -euo pipefail

CYRBIN=/usr/lib/cyrus/bin   # cyrus-common: master, lmtpd, ctl_cyrusdb, idled's libraries
# imapd and idled come from the package cyrus-imapd, which must NOT be installed: it Conflicts with imap-server,
# so apt-get removes dovecot-imapd (and every Dovecot-based check on the machine breaks). Its binaries are unpacked
# with dpkg-deb -x into a private root instead (dpkg then knows nothing of them and keeps dovecot-imapd).
IMAPD_ROOT=${CYRUS_IMAPD_ROOT:-/opt/cyrus-imapd-root}
if [[ -x $IMAPD_ROOT/usr/lib/cyrus/bin/imapd ]]; then IMAPDBIN=$IMAPD_ROOT/usr/lib/cyrus/bin
else IMAPDBIN=$CYRBIN; fi
cmd="${1:-}"; dir="${2:-}"
installed() { [[ -x $CYRBIN/master && -x $CYRBIN/lmtpd && -x $IMAPDBIN/imapd && -x $IMAPDBIN/idled && -x /usr/sbin/saslpasswd2 ]]; }
if [[ "$cmd" == install ]]; then
  if installed && [[ -z "${CYRUS_FORCE_INSTALL:-}" ]]; then echo "cyrus: already installed (cyrus-common $(dpkg-query -W -f='${Version}' cyrus-common), imapd in $IMAPDBIN)"; exit 0; fi
  # no service may be started by the packages' maintainer scripts (Debian's own Cyrus would listen on 143/993)
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # Docker images ship one; a VM doesn't: ours goes again afterwards
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  elif ! grep -q 'exit 101' /usr/sbin/policy-rc.d; then
    echo "cyrus: /usr/sbin/policy-rc.d exists but does not refuse services (exit 101): not installing" >&2; exit 1
  fi
  lockwait=(-o DPkg::Lock::Timeout=300)   # another apt run (e.g. scripts/install.sh's) finishes first
  apt-get "${lockwait[@]}" update -qq
  # --no-remove: abort rather than remove anything (cyrus-common and sasl2-bin conflict with nothing installed)
  DEBIAN_FRONTEND=noninteractive apt-get "${lockwait[@]}" install -y -qq --no-install-recommends --no-remove cyrus-common sasl2-bin \
    >/dev/null || { echo "cyrus: apt-get install cyrus-common sasl2-bin failed (or would remove a package)" >&2; exit 1; }
  # a systemd host enabled Debian's own cyrus-imapd.service (143/993 at the next boot): off, we run private ones
  if [[ -d /run/systemd/system ]]; then systemctl disable --now cyrus-imapd.service >/dev/null 2>&1 || true; fi
  ver=$(dpkg-query -W -f='${Version}' cyrus-common)
  tmp=$(mktemp -d); chmod 0755 "$tmp"; chown _apt "$tmp" 2>/dev/null || true   # apt's _apt user downloads into it
  ( cd "$tmp" && apt-get download -qq "cyrus-imapd=$ver" ) || { rm -rf "$tmp"; echo "cyrus: apt-get download cyrus-imapd=$ver failed" >&2; exit 1; }
  mkdir -p "$IMAPD_ROOT"
  dpkg-deb -x "$tmp"/cyrus-imapd_*.deb "$IMAPD_ROOT"
  rm -rf "$tmp"
  IMAPDBIN=$IMAPD_ROOT/usr/lib/cyrus/bin
  installed || { echo "cyrus: $IMAPDBIN/imapd or a cyrus-common binary missing" >&2; exit 1; }
  echo "cyrus: cyrus-common $ver installed, cyrus-imapd $ver unpacked into $IMAPD_ROOT (not installed)"
  exit 0
fi
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '2,/^set -e/p' "$0" | grep '^#'; exit 2; }
mkdir -p "$dir"; DIR="$(cd "$dir" && pwd)"
CONF="$DIR/imapd.conf"; MCONF="$DIR/cyrus.conf"

die() { echo "cyrus: $*" >&2; exit 1; }
owns() { [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$2"; }
alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null || return 1
  local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$st" != Z ]]
}
master_pid() {
  local p; p=$([[ -s "$DIR/master.pid" ]] && cat "$DIR/master.pid" || true)
  [[ -n "$p" ]] && owns "$p" "$MCONF" && echo "$p" || true
}
wait_port() { # host port timeout_s greeting-prefix
  local t0=$SECONDS
  while (( SECONDS - t0 < $3 )); do
    if ( exec 3<>"/dev/tcp/$1/$2" && IFS= read -r -t 2 line <&3 && [[ "$line" == "$4"* ]] ) 2>/dev/null
    then return 0; fi
    sleep 0.1
  done
  return 1
}

write_config() {
  local imap=${CYRUS_IMAP_PORT:-30143} imaps=${CYRUS_IMAPS_PORT:-30993}
  mkdir -p "$DIR"/{config,spool,run/proc,run/lock,run/socket,sieve,ssl,log,tmp}
  mkdir -p "$DIR"/config/{db,log,msg,ptclient,quota,user,socket,lock}
  # Cyrus logs only to syslog and this machine has no /dev/log: an LD_PRELOAD shim writes it to DIR/log/cyrus.log
  local here; here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  if [[ ! -s "$DIR/syslog_shim.so" || "$here/syslog_shim.c" -nt "$DIR/syslog_shim.so" ]] && command -v gcc >/dev/null; then
    gcc -O2 -shared -fPIC -o "$DIR/syslog_shim.so" "$here/syslog_shim.c" || rm -f "$DIR/syslog_shim.so"
  fi
  touch "$DIR/log/cyrus.log"
  chmod 0755 "$DIR"
  if [[ ! -s "$DIR/ssl/cert.pem" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$DIR/ssl/key.pem" -out "$DIR/ssl/cert.pem" 2>/dev/null
  fi
  cat > "$CONF.tmp" <<EOF
# generated by cyrus.sh -- regenerated at every start
configdirectory: $DIR/config
defaultpartition: default
partition-default: $DIR/spool
proc_path: $DIR/run/proc
mboxname_lockpath: $DIR/run/lock
lmtpsocket: $DIR/run/socket/lmtp
idlesocket: $DIR/run/socket/idle
notifysocket: $DIR/run/socket/notify
sievedir: $DIR/sieve
temp_path: $DIR/tmp
servername: localhost
admins: cyrusadm
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $DIR/sasldb2
sasl_mech_list: PLAIN LOGIN
altnamespace: ${ALTNAMESPACE:-no}
unixhierarchysep: ${UNIXHIERARCHYSEP:-no}
hashimapspool: true
lmtp_downcase_rcpt: yes
tls_server_cert: $DIR/ssl/cert.pem
tls_server_key: $DIR/ssl/key.pem
syslog_prefix: cyrus-$imap
umask: 077
EOF
  [[ -n "${IMAPIDLEPOLL:-}" ]] && echo "imapidlepoll: $IMAPIDLEPOLL" >> "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  local daemon=""
  [[ "${IDLED:-1}" == 1 ]] && daemon="  idled cmd=\"$IMAPDBIN/idled -C $CONF\""
  cat > "$MCONF" <<EOF
# generated by cyrus.sh
START {
  recover cmd="$CYRBIN/ctl_cyrusdb -r -C $CONF"
}
SERVICES {
  imap  cmd="$IMAPDBIN/imapd -C $CONF" listen="127.0.0.1:$imap" prefork=0 maxchild=300
  imaps cmd="$IMAPDBIN/imapd -s -C $CONF" listen="127.0.0.1:$imaps" prefork=0 maxchild=300
  lmtpunix cmd="$CYRBIN/lmtpd -C $CONF" listen="$DIR/run/socket/lmtp" prefork=0 maxchild=20
}
EVENTS {
  checkpoint cmd="$CYRBIN/ctl_cyrusdb -c -C $CONF" period=30
}
DAEMON {
$daemon
}
EOF
  chown -R cyrus:mail "$DIR"/{config,spool,run,sieve,ssl,log,tmp}
  chmod 0644 "$DIR/log/cyrus.log"
  chmod 0750 "$DIR/ssl"; chmod 0640 "$DIR/ssl/key.pem"; chmod 0644 "$DIR/ssl/cert.pem"
  cat > "$DIR/ports.env" <<EOF
CYRUS_DIR=$DIR
CYRUS_IMAP_PORT=$imap
CYRUS_IMAPS_PORT=$imaps
CYRUS_LMTP_SOCKET=$DIR/run/socket/lmtp
CYRUS_CA_CERT=$DIR/ssl/cert.pem
CYRUS_CONF=$CONF
CYRUS_PROC_DIR=$DIR/run/proc
CYRUS_TELEMETRY_DIR=$DIR/config/log
EOF
}

set_secret() { # user pass
  printf '%s' "$2" | /usr/sbin/saslpasswd2 -p -c -f "$DIR/sasldb2" -u localhost "$1"
  chown cyrus:mail "$DIR/sasldb2"; chmod 0640 "$DIR/sasldb2"
  # the same users in the test bed's passwd-file format (read by the SMTP relay's AUTH)
  { grep -v "^$1:" "$DIR/users" 2>/dev/null || true; echo "$1:{PLAIN}$2::::::"; } > "$DIR/users.new"
  mv "$DIR/users.new" "$DIR/users"; chmod 0644 "$DIR/users"
}

imap_admin() { # python snippet run with c = admin IMAP connection
  local py=${CHECK_PYTHON:-python3}
  . "$DIR/ports.env"
  local sep=.
  [[ "$(sed -n 's/^unixhierarchysep: *//p' "$CONF")" == yes ]] && sep=/
  "$py" - "$CYRUS_IMAP_PORT" "$sep" "$@" <<'PY'
import sys
from imapclient import IMAPClient
port, sep, op, *args = sys.argv[1:]
c = IMAPClient("127.0.0.1", port=int(port), ssl=False, timeout=30)
c.login("cyrusadm", "adminpass")
if op == "mkuser":
    box = "user" + sep + args[0]
    if not c.folder_exists(box):
        c.create_folder(box)
c.logout()
PY
}

adduser() {
  local user=${3:?USER} pass=${4:?PASS}
  [[ "$user$pass" != *:* ]] || die "':' not allowed"
  set_secret "$user" "$pass"
  mkdir -p "$DIR/config/log/$user"; chown cyrus:mail "$DIR/config/log" "$DIR/config/log/$user"
  imap_admin mkuser "$user"
  echo "cyrus: user $user set"
}

start() {
  local pid; pid=$(master_pid)
  if alive "$pid"; then echo "cyrus: already running in $DIR (pid $pid)"; return 0; fi
  stop >/dev/null
  write_config
  rm -rf "$DIR/run/socket"/* "$DIR/run/proc"/* "$DIR/config/socket"/* 2>/dev/null || true
  . "$DIR/ports.env"
  set_secret cyrusadm adminpass
  # master in the foreground (no -d) in its own session: stop ends the whole process group
  local preload=""
  [[ -s "$DIR/syslog_shim.so" ]] && preload="$DIR/syslog_shim.so"
  CYRUS_SYSLOG_FILE="$DIR/log/cyrus.log" LD_PRELOAD="$preload" setsid "$CYRBIN/master" -C "$CONF" -M "$MCONF" -p "$DIR/master.pid" -L "$DIR/log/master.log" \
    </dev/null >>"$DIR/log/master.stderr" 2>&1 &
  local t0=$SECONDS
  until [[ -n "$(master_pid)" ]]; do
    (( SECONDS - t0 < 15 )) || { tail -n 20 "$DIR/log/master.log" "$DIR/log/master.stderr" >&2; die "master failed to start"; }
    sleep 0.1
  done
  ps -o pgid= -p "$(master_pid)" | tr -d ' ' > "$DIR/master.pgid"
  wait_port 127.0.0.1 "$CYRUS_IMAP_PORT" 30 "* OK" || { tail -n 20 "$DIR/log/master.log" >&2; die "IMAP not ready on $CYRUS_IMAP_PORT"; }
  local n=${NUSERS:-5} i
  for ((i = 1; i <= n; i++)); do adduser x x "user$i" "pass$i" >/dev/null; done
  echo "cyrus: running in $DIR (pid $(master_pid)) imap=$CYRUS_IMAP_PORT imaps=$CYRUS_IMAPS_PORT idled=${IDLED:-1}"
}

group_alive() { [[ -n "${1:-}" ]] && ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {f = 1} END {exit !f}'; }

stop() {
  local pid pg i; pid=$(master_pid)
  pg=$([[ -s "$DIR/master.pgid" ]] && cat "$DIR/master.pgid" || true)
  if alive "$pid"; then
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.05; done
  fi
  if group_alive "$pg"; then   # imapd children serving clients
    kill -TERM -- "-$pg" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do group_alive "$pg" || break; sleep 0.1; done
    group_alive "$pg" && { kill -KILL -- "-$pg" 2>/dev/null || true; }
  fi
  rm -f "$DIR/master.pgid" "$DIR/master.pid"
  echo "cyrus: stopped ($DIR)"
}

case "$cmd" in
  start) NUSERS=${3:-${NUSERS:-5}} start ;;
  stop) stop ;;
  status) pid=$(master_pid); alive "$pid" && { echo "running (pid $pid)"; exit 0; } || { echo "stopped"; exit 1; } ;;
  adduser) adduser "$@" ;;
  env) cat "$DIR/ports.env" ;;
  *) die "unknown command $cmd" ;;
esac
