#!/usr/bin/env bash
# benches/converge.sh: how long $EDGES edges on loopback take to agree on
# membership and to settle their P-Grid paths, from one bootstrap address.
#
# Edges 127.0.79.1..N start at once, every one after the first with only the
# first's overlay address. Printed: the time from the last start until every
# edge sees every other alive with its gateway (membership), and until every
# edge has run exchanges and knows the whole path's replica set or refs
# (P-Grid; with few keys, as here, every edge stays at the root path and the
# others are its replicas). Knobs: EDGES (10), GRIDEDGE_BIN, KEEP_WORK=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
EDGES=${EDGES:-10}
GRIDEDGE_BIN=${GRIDEDGE_BIN:-$ROOT/target/release/gridedge}
if [ ! -x "$GRIDEDGE_BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin gridedge)
fi
WORK=$(mktemp -d /tmp/gridedge-converge.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "converge.sh: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for i in $(seq "$EDGES"); do
  ip=127.0.79.$i
  boot=""
  [ "$i" -gt 1 ] && boot='"/ip4/127.0.79.1/tcp/4100"'
  mkdir -p "$WORK/$i"
  cat >"$WORK/$i/gridedge.toml" <<EOF
data_dir = "$WORK/$i/data"
[log]
level = "warn"
[dns]
listen_udp = ["$ip:5300"]
listen_tcp = ["$ip:5300"]
[admin]
listen = "$ip:9100"
[edge]
http_listen = "$ip:8080"
[overlay]
listen = ["/ip4/$ip/tcp/4100"]
bootstrap = [$boot]
EOF
done
for i in $(seq "$EDGES"); do
  "$GRIDEDGE_BIN" run --config "$WORK/$i/gridedge.toml" 2>"$WORK/$i.log" &
  PIDS+=($!)
done
for i in $(seq "$EDGES"); do
  for _ in $(seq 100); do curl -sf "http://127.0.79.$i:9100/health" >/dev/null && break; sleep 0.05; done
done
T0=$(date +%s.%N)
want=$((EDGES - 1))
membership="" pgrid=""
for _ in $(seq 1200); do
  all_members=1 all_paths=1
  for i in $(seq "$EDGES"); do
    json=$("$GRIDEDGE_BIN" status --json --admin "http://127.0.79.$i:9100" 2>/dev/null) || { all_members=0; all_paths=0; break; }
    alive=$(printf '%s' "$json" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for m in s["members"] if m["state"]=="alive" and m["http"]))')
    known=$(printf '%s' "$json" | python3 -c 'import json,sys; s=json.load(sys.stdin); p=s["pgrid"]; print(len(set(p["replicas"]) | {r for l in p["refs"] for r in l}) if p["exchanges"] > 0 else 0)')
    [ "$alive" -ge "$want" ] || all_members=0
    [ "$known" -ge "$want" ] || all_paths=0
  done
  now=$(date +%s.%N)
  if [ -z "$membership" ] && [ "$all_members" = 1 ]; then membership=$(echo "$now - $T0" | bc -l); fi
  if [ -z "$pgrid" ] && [ "$all_paths" = 1 ]; then pgrid=$(echo "$now - $T0" | bc -l); fi
  if [ -n "$membership" ] && [ -n "$pgrid" ]; then break; fi
  sleep 0.2
done
printf '%s edges: membership in %s s, P-Grid (every edge knows every other as a replica or ref) in %s s\n' \
  "$EDGES" "${membership:-never}" "${pgrid:-never}"
