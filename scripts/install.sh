#!/usr/bin/env bash
# Install what imap-runtime's tests and local servers need. Debian 12, as root. Idempotent: a
# second run checks and returns in about 1 s. Prints one summary line.
#
#   scripts/install.sh
#
# Debian packages: dovecot-imapd dovecot-lmtpd dovecot-submissiond openssl procps python3-venv,
#   + rabbitmq-server when nothing answers AMQP on 127.0.0.1:5672,
#   + redis-server    when it is not installed (scripts/run.sh runs a private instance, so the demo never
#                     writes into a Redis that erxes may share).
#   apt never removes a package (--no-remove): one that conflicts (say another IMAP server) is named in one
#   line and nothing is changed. apt's progress is shown every few seconds (the first run takes ~20-60 s).
#   + chromium chromium-driver (the console's browser tests; a block of its own, apt's --no-remove).
#   The packages' own system services are kept from starting (policy-rc.d while apt runs) and, on a
#   systemd host, disabled: scripts/services.sh runs private loopback-only instances instead.
#   `apt-get update` runs once, and only when something has to be installed.
# Python: venv at $REPO/.venv (created with $PYTHON, default python3, >= 3.11), then
#   `pip install -e "$REPO[test]"` whenever setup.cfg/pyproject.toml changed since the last install
#   (their sha256 is kept in .venv/.imap-runtime-install.sha256).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV=$REPO/.venv
STAMP=$VENV/.imap-runtime-install.sha256
T0=$(date +%s.%N)

die() { echo "install: $*" >&2; exit 1; }

# Does 127.0.0.1:$1 answer? (bash /dev/tcp; 'timeout' also bounds the connect)
# shellcheck disable=SC2016  # $1 is expanded by the inner bash
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
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ---- Debian packages ------------------------------------------------------------------------
PKGS=(dovecot-imapd dovecot-lmtpd dovecot-submissiond openssl procps python3-venv)
rabbit_note="rabbitmq: 127.0.0.1:5672 answers"
if ! amqp_answers 5672; then PKGS+=(rabbitmq-server); rabbit_note="rabbitmq-server for a private node"; fi
redis_note="redis: 127.0.0.1:6379 answers"
redis_answers 6379 || redis_note="redis-server for a private instance"
command -v redis-server >/dev/null || installed redis-server || PKGS+=(redis-server)

need=()
for p in "${PKGS[@]}"; do installed "$p" || need+=("$p"); done
if ((${#need[@]})); then
  [[ $EUID -eq 0 ]] || die "run as root: Debian packages to install: ${need[*]}"
  command -v apt-get >/dev/null || die "no apt-get: install by hand: ${need[*]}"
  guard=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # Docker images ship one; a VM doesn't
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1
  fi
  cleanup() { if ((guard)); then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  LOG=/tmp/imap-runtime-apt.log
  echo "install: apt-get update, then install ${need[*]} (the first run takes about 20-60 s; log: $LOG)" >&2
  apt_progress() { # pid: a line every 5 s while apt runs, with its latest words
    local t0=$SECONDS
    while kill -0 "$1" 2>/dev/null; do
      sleep 1
      (( (SECONDS - t0) % 5 == 0 )) && echo "install: ... $((SECONDS - t0)) s: $(tail -n 1 "$LOG" 2>/dev/null | cut -c1-100)" >&2
    done
    wait "$1"
  }
  apt-get update -q >"$LOG" 2>&1 &
  apt_progress $! || { tail -20 "$LOG" >&2; die "apt-get update failed (log: $LOG)"; }
  # never remove anything: a package that conflicts is named, and nothing is changed
  removals=$(DEBIAN_FRONTEND=noninteractive apt-get install -s --no-install-recommends "${need[@]}" 2>/dev/null |
    awk '/^Remv /{print $2}' | tr '\n' ' ' || true)
  [[ -z "${removals// /}" ]] || die "installing ${need[*]} would remove ${removals% } (a conflicting package); nothing was changed: remove it yourself or use another machine"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-remove --no-install-recommends "${need[@]}" \
    >>"$LOG" 2>&1 &
  apt_progress $! || { tail -30 "$LOG" >&2; die "apt-get install failed (log: $LOG)"; }
  if [[ -d /run/systemd/system ]]; then   # systemd host: the units got enabled anyway -> off
    units=()
    for p in "${need[@]}"; do
      case $p in
        dovecot-*) units+=(dovecot.service dovecot.socket) ;;
        rabbitmq-server) units+=(rabbitmq-server.service epmd.service epmd.socket) ;;
        redis-server) units+=(redis-server.service) ;;
      esac
    done
    ((${#units[@]})) && { systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true; }
  fi
  cleanup; trap - EXIT
fi
# ---- the console's browser tests (tests/browser): Debian's Chromium and its WebDriver ---------
# A block of its own; --no-remove: apt may never remove a package to make room for them.
if ! installed chromium || ! installed chromium-driver; then
  [[ $EUID -eq 0 ]] || die "run as root: Debian packages to install: chromium chromium-driver"
  echo "install: apt-get install chromium chromium-driver" >&2
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove chromium \
    chromium-driver >/tmp/imap-runtime-apt-chromium.log 2>&1 ||
    { tail -30 /tmp/imap-runtime-apt-chromium.log >&2; die "apt-get install chromium failed (log: /tmp/imap-runtime-apt-chromium.log)"; }
fi

[[ -r /usr/share/dovecot/dh.pem ]] || die "/usr/share/dovecot/dh.pem missing (dovecot-core not installed properly?)"

# ---- Cyrus IMAP, the second test server: never 'apt-get install cyrus-imapd' (it removes dovecot-imapd) ------
cyrus_out=$(bash "$REPO/scripts/cyrus.sh" install 2>&1) || { echo "$cyrus_out" >&2; die "scripts/cyrus.sh install failed"; }
[[ "$cyrus_out" == *"already installed"* ]] || echo "install: $cyrus_out" >&2

# ---- Python venv ----------------------------------------------------------------------------
PY=${PYTHON:-python3}
venv_note="venv up to date"
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PY is missing or older than 3.11 (set PYTHON=/path/to/python3.11+)"
  if [[ -e "$VENV" ]]; then
    echo "install: $VENV is broken or too old, recreating it" >&2
    "$PY" -m venv --clear "$VENV" || die "python -m venv failed"
  else
    "$PY" -m venv "$VENV" || die "python -m venv failed"
  fi
  venv_note="venv created"
fi
want=$(cat "$REPO/setup.cfg" "$REPO/pyproject.toml" 2>/dev/null | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ "$want" != "$have" || ! -x "$VENV/bin/secantusd-py" || ! -x "$VENV/bin/pytest" ]]; then
  rm -f "$STAMP"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "${REPO}[test]" \
    >"$VENV/pip-install.log" 2>&1 ||
    { tail -30 "$VENV/pip-install.log" >&2; die "pip install -e '${REPO}[test]' failed (log: $VENV/pip-install.log)"; }
  echo "$want" > "$STAMP"
  [[ $venv_note == "venv created" ]] || venv_note="venv updated"
fi

if ((${#need[@]})); then pkg_note="installed ${need[*]}"; else pkg_note="Debian packages present"; fi
printf 'install: ok in %.1fs: %s; dovecot %s; %s; %s; %s (%s)\n' \
  "$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$pkg_note" \
  "$(dovecot --version | cut -d' ' -f1)" "$rabbit_note" "$redis_note" "$venv_note" "$VENV"
