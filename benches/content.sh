#!/usr/bin/env bash
# benches/content.sh: moving one large file between two edges on loopback,
# beside curl of the same file from nginx on loopback, in one run.
#
# Two gridedge edges (127.0.78.1 and .2, the second bootstrapping from the
# first) and nginx (127.0.78.3, sendfile, 2 workers as the gateway has 2
# threads) are started here and stopped on exit. For a file of $SIZE_MIB
# MiB of random bytes it measures, each $REPEAT times (median reported):
#
#   put          gridedge put FILE on edge 1 (chunk, hash, CAR to the
#                admin API, every block checked and fsynced into the store)
#   get-overlay  gridedge get CID from edge 2's gateway, which does not hold
#                it: edge 2 finds edge 1 through P-Grid, fetches the CAR,
#                verifies and stores every block, then serves it; the client
#                verifies again and writes the file (edge 2's copy is
#                deleted between rounds by restarting it on a fresh store)
#   get-direct   gridedge get CID from edge 1's gateway (a CAR, verified,
#                written)
#   curl-gateway curl of http://edge1/ipfs/CID (the file route, to /dev/null)
#   curl-nginx   curl of the same file from nginx (to /dev/null)
#
# and prints MiB/s for each and the ratio of each gridedge figure to
# curl-nginx (higher is better).
#
# Knobs (environment): SIZE_MIB (100) REPEAT (3) GRIDEDGE_BIN (default
# target/release/gridedge, built if missing) KEEP_WORK=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-100}
REPEAT=${REPEAT:-3}
GRIDEDGE_BIN=${GRIDEDGE_BIN:-$ROOT/target/release/gridedge}
A=127.0.78.1 B=127.0.78.2 NGINX=127.0.78.3

PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx curl; do
  command -v "$tool" >/dev/null || {
    echo "content.sh: $tool not found (apt-get install nginx-light curl)" >&2
    exit 1
  }
done
if [ ! -x "$GRIDEDGE_BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin gridedge)
fi

WORK=$(mktemp -d /tmp/gridedge-content-bench.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "content.sh: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[content.sh] %s\n' "$*" >&2; }

edge_config() { # NAME IP BOOTSTRAP KEEP_REPLICAS
  local dir=$WORK/$1
  mkdir -p "$dir"
  cat >"$dir/gridedge.toml" <<EOF
data_dir = "$dir/data"
[log]
level = "warn"
[dns]
listen_udp = ["$2:5300"]
listen_tcp = ["$2:5300"]
[admin]
listen = "$2:9100"
[edge]
http_listen = "$2:8080"
[overlay]
listen = ["/ip4/$2/tcp/4100"]
bootstrap = [$3]
keep_replicas = $4
EOF
}

start_edge() { # NAME
  "$GRIDEDGE_BIN" run --config "$WORK/$1/gridedge.toml" 2>"$WORK/$1.log" &
  PIDS+=($!)
  eval "PID_$1=$!"
  local ip
  ip=$(sed -n 's/^listen = "\(.*\):9100"/\1/p' "$WORK/$1/gridedge.toml")
  for _ in $(seq 100); do
    curl -sf "http://$ip:9100/health" >/dev/null && return 0
    sleep 0.1
  done
  log "edge $1 did not start:"; cat "$WORK/$1.log" >&2; exit 1
}

wait_members() { # IP WANT
  for _ in $(seq 300); do
    if [ "$("$GRIDEDGE_BIN" peers --admin "http://$1:9100" | grep -c ' alive ')" -ge "$2" ]; then return 0; fi
    sleep 0.1
  done
  log "membership did not converge"; exit 1
}

# Edge 2 keeps no replicas: it holds the file only once a get asks it to.
edge_config a $A "" true
edge_config b $B "\"/ip4/$A/tcp/4100\"" false
start_edge a
start_edge b
wait_members $A 1
wait_members $B 1

mkdir -p "$WORK/www" "$WORK/nginx"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/www/file.bin"
FILE=$WORK/www/file.bin
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server { listen $NGINX:8089; root $WORK/www; }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://$NGINX:8089/file.bin" -r 0-0 && break; sleep 0.1; done

secs() { # COMMAND…: wall seconds of the command
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RUNS
CID=""
for round in $(seq "$REPEAT"); do
  log "round $round of $REPEAT"
  t=$(secs "$GRIDEDGE_BIN" put "$FILE" --admin "http://$A:9100")
  RUNS[put]+="$t "
  CID=$("$GRIDEDGE_BIN" put "$FILE" --admin "http://$A:9100")
  # Edge 2 on an empty store, so the get goes through the overlay.
  kill "$PID_b"; wait "$PID_b" 2>/dev/null || true
  rm -rf "$WORK/b/data/content"
  start_edge b
  wait_members $B 1
  rm -f "$WORK/out.bin"
  t=$(secs "$GRIDEDGE_BIN" get "$CID" -o "$WORK/out.bin" --from "http://$B:8080")
  cmp -s "$FILE" "$WORK/out.bin" || { log "get-overlay: the file differs"; exit 1; }
  RUNS[get-overlay]+="$t "
  rm -f "$WORK/out.bin"
  t=$(secs "$GRIDEDGE_BIN" get "$CID" -o "$WORK/out.bin" --from "http://$A:8080")
  cmp -s "$FILE" "$WORK/out.bin" || { log "get-direct: the file differs"; exit 1; }
  RUNS[get-direct]+="$t "
  rm -f "$WORK/out.bin"
  t=$(secs curl -sf -o /dev/null "http://$A:8080/ipfs/$CID")
  RUNS[curl-gateway]+="$t "
  t=$(secs curl -sf -o /dev/null "http://$NGINX:8089/file.bin")
  RUNS[curl-nginx]+="$t "
done

printf '\n%s MiB, median of %s; gridedge %s, %s\n' "$SIZE_MIB" "$REPEAT" \
  "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')" "$(nginx -v 2>&1)"
printf '%-13s %9s %9s %10s\n' case seconds MiB/s vs-nginx
nginx_s=$(printf '%s\n' ${RUNS[curl-nginx]} | median)
for c in put get-overlay get-direct curl-gateway curl-nginx; do
  s=$(printf '%s\n' ${RUNS[$c]} | median)
  rate=$(echo "$SIZE_MIB / $s" | bc -l)
  ratio=$(echo "$nginx_s / $s" | bc -l)
  printf '%-13s %9.3f %9.1f %9.3fx\n' "$c" "$s" "$rate" "$ratio"
done
