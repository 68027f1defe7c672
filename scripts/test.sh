#!/usr/bin/env bash
# The one test command of the README: installs what the integration tests
# need on a fresh Debian/Ubuntu machine (only what is missing), makes sure no
# distro Unbound holds 127.0.0.1:53, then runs the whole test suite in
# release mode (the integration tests start the real binary, and the
# benchmark builds release too, so dependencies are built once).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -- <filter>     # extra arguments go to the test runner
#
# Environment: GRIDEDGE_NO_INSTALL=1 skips the apt step;
#              GRIDEDGE_NO_NEXTEST=1 forces plain `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# tool -> Debian package that provides it
declare -A NEED=(
  [cmake]=cmake
  [dig]=dnsutils
  [unbound]=unbound
  [unbound-checkconf]=unbound
  [dnsperf]=dnsperf
  [curl]=curl
  [openssl]=openssl
)

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

install_missing() {
  local missing=() tool
  for tool in "${!NEED[@]}"; do
    have "$tool" || missing+=("${NEED[$tool]}")
  done
  # CA bundle: needed by curl/openssl against the test CA tooling.
  [ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  # unique, stable order
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing[*]} and no apt-get here; install them by hand"
    exit 1
  fi
  log "installing: ${missing[*]}"
  # policy-rc.d exit 101 tells invoke-rc.d not to start services during the
  # install, so the distro unbound never gets to bind port 53 at all.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod +x "$policy"
    made_policy=1
  fi
  local rc=0
  {
    "${SUDO[@]}" apt-get update -qq &&
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >/tmp/gridedge-apt.log 2>&1 || rc=$?
  if [ "$made_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 30 /tmp/gridedge-apt.log >&2
    log "apt-get failed (full log: /tmp/gridedge-apt.log)"
    exit "$rc"
  fi
}

# The tests start their own unbound on loopback; a distro one started by
# apt (or by an earlier boot) would hold 127.0.0.1:53 and answer in their
# place. Stop it whether or not systemd is PID 1.
stop_distro_unbound() {
  local svc
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for svc in unbound unbound-resolvconf; do
      if systemctl list-unit-files "$svc.service" >/dev/null 2>&1; then
        "${SUDO[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
      fi
    done
  else
    # No systemd: the sysv script, then (below) any daemon left over.
    if [ -x /etc/init.d/unbound ]; then
      "${SUDO[@]}" /etc/init.d/unbound stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1 && [ -x /etc/init.d/unbound ]; then
      "${SUDO[@]}" update-rc.d unbound disable >/dev/null 2>&1 || true
    fi
  fi
  # unbound-resolvconf points /etc/resolv.conf at 127.0.0.1 via resolvconf;
  # undo that if it happened, so tests and cargo keep a working resolver.
  if command -v resolvconf >/dev/null 2>&1; then
    "${SUDO[@]}" resolvconf -d lo.unbound >/dev/null 2>&1 || true
  fi
  # The daemon from the distro config (pidfile /run/unbound.pid), if any
  # survived; tests' own unbounds use their own configs and pidfiles.
  local pid
  if [ -r /run/unbound.pid ]; then
    pid=$(cat /run/unbound.pid 2>/dev/null || true)
    if [ -n "$pid" ] && grep -qs unbound "/proc/$pid/comm"; then
      log "stopping distro unbound (pid $pid)"
      "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    fi
  fi
  if command -v ss >/dev/null 2>&1 &&
    ss -lunp 2>/dev/null | grep -E '127\.0\.0\.1:53 ' | grep -q unbound; then
    log "warning: an unbound still listens on 127.0.0.1:53"
  fi
}

if [ "${GRIDEDGE_NO_INSTALL:-0}" != 1 ]; then
  install_missing
fi
stop_distro_unbound

# tests/content.rs checks our CIDs against the reference IPFS importer
# (ipfs-unixfs-importer from npm), whose packages are locked in tests/js.
# Without node and npm that check fails (it is never skipped as passing).
if [ ! -d tests/js/node_modules/ipfs-unixfs-importer ]; then
  if have npm && have node; then
    log "npm ci in tests/js (the reference IPFS importer)"
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  else
    log "FAILURE: node and npm are not installed; the content conformance test" \
      "(tests/content.rs against ipfs-unixfs-importer) will fail. Install Node.js 20+ and npm."
  fi
fi

# The integration tests look for unbound in PATH; Debian puts it in /usr/sbin,
# which is not in a normal user's PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

args=()
if [ "${1:-}" = "--" ]; then shift; fi
args=("$@")

if [ "${GRIDEDGE_NO_NEXTEST:-0}" != 1 ] && cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests: run them first, with the same release
  # artifacts, so that nextest's summary is the last thing printed.
  if [ "${#args[@]}" -eq 0 ]; then
    log "cargo test --release --doc"
    cargo test --release --doc --quiet
  fi
  log "cargo nextest run --release"
  cargo nextest run --release --all-targets "${args[@]}"
else
  log "cargo test --release --all-targets"
  cargo test --release --all-targets "${args[@]}"
fi
