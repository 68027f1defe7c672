#!/usr/bin/env bash
# benches/http.sh: the HTTP cache side by side with nginx's proxy_cache and
# Varnish, in one run, on loopback.
#
# An origin (nginx serving static files with Cache-Control: max-age=3600,
# 127.0.79.2) sits behind three caching reverse proxies, each fronting it
# as the site bench.test:
#
#   gridedge  the edge's proxy ([[edge.sites]]), 2 runtime threads  127.0.79.1:3128
#   nginx     proxy_cache on a disk path, 2 workers                 127.0.79.3:8090
#   varnish   varnishd -s malloc, default thread pools (if installed) 127.0.79.4:6081
#
# Each is warmed (one request per object), then wrk drives cache hits for
# DURATION seconds with CONNS connections on 2 threads, for a small object
# (1 KiB) and a larger one (100 KiB), REPEAT rounds alternating the
# servers (median reported). It prints requests/s and latency p50/p99 and
# the ratio of gridedge to each (higher is better for req/s, lower for
# latency). wrk, the proxies and the origin share the machine's cores, as
# they would on one box.
#
# Knobs (environment): DURATION (10) CONNS (32) REPEAT (3) GRIDEDGE_BIN
# (default target/release/gridedge, built if missing) KEEP_WORK=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
REPEAT=${REPEAT:-3}
GRIDEDGE_BIN=${GRIDEDGE_BIN:-$ROOT/target/release/gridedge}
GE=127.0.79.1 ORIGIN=127.0.79.2 NGX=127.0.79.3 VARNISH=127.0.79.4

PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx curl wrk; do
  command -v "$tool" >/dev/null || {
    echo "http.sh: $tool not found (apt-get install nginx-light curl wrk)" >&2
    exit 1
  }
done
HAVE_VARNISH=0
command -v varnishd >/dev/null && HAVE_VARNISH=1
if [ ! -x "$GRIDEDGE_BIN" ]; then
  (cd "$ROOT" && cargo build --release --bin gridedge)
fi

WORK=$(mktemp -d /tmp/gridedge-http-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "http.sh: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[http.sh] %s\n' "$*" >&2; }

mkdir -p "$WORK/www" "$WORK/nginx" "$WORK/cache"
head -c 1024 /dev/urandom >"$WORK/www/small.bin"
head -c $((100 << 10)) /dev/urandom >"$WORK/www/large.bin"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  proxy_cache_path $WORK/cache keys_zone=bench:16m max_size=1g;
  upstream origin { server $ORIGIN:8089; keepalive 32; }
  # The origin.
  server {
    listen $ORIGIN:8089;
    root $WORK/www;
    add_header Cache-Control "max-age=3600";
  }
  # nginx as the caching proxy.
  server {
    listen $NGX:8090;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host bench.test;
      proxy_cache bench;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

mkdir -p "$WORK/ge"
cat >"$WORK/ge/gridedge.toml" <<EOF
data_dir = "$WORK/ge/data"
[log]
level = "warn"
[dns]
listen_udp = ["$GE:5300"]
listen_tcp = ["$GE:5300"]
[admin]
listen = "$GE:9100"
[edge]
http_listen = "$GE:8080"
proxy_listen = "$GE:3128"
threads = 2
[[edge.sites]]
host = "bench.test"
origin = "$ORIGIN:8089"
[overlay]
listen = []
EOF
"$GRIDEDGE_BIN" run --config "$WORK/ge/gridedge.toml" 2>"$WORK/ge.log" &
PIDS+=($!)

if [ "$HAVE_VARNISH" = 1 ]; then
  varnishd -F -a "$VARNISH:6081" -b "$ORIGIN:8089" -n "$WORK/varnish" -s malloc,256m \
    >"$WORK/varnish.log" 2>&1 &
  PIDS+=($!)
else
  log "varnishd not found (apt-get install varnish): its column is left out"
fi

declare -A URL=(
  [gridedge]="http://$GE:3128"
  [nginx]="http://$NGX:8090"
  [varnish]="http://$VARNISH:6081"
)
SERVERS=(gridedge nginx)
[ "$HAVE_VARNISH" = 1 ] && SERVERS+=(varnish)

for s in "${SERVERS[@]}"; do
  for _ in $(seq 100); do
    curl -sf -o /dev/null -H 'Host: bench.test' "${URL[$s]}/small.bin" && break
    sleep 0.1
  done
  for obj in small large; do
    # Twice: the first fills the cache, the second must be a hit.
    curl -sf -o /dev/null -H 'Host: bench.test' "${URL[$s]}/$obj.bin" ||
      { log "$s does not serve /$obj.bin"; cat "$WORK"/*.log >&2 || true; exit 1; }
    got=$(curl -sf -H 'Host: bench.test' "${URL[$s]}/$obj.bin" | cmp - "$WORK/www/$obj.bin" && echo same)
    [ "$got" = same ] || { log "$s serves a different /$obj.bin"; exit 1; }
  done
done

# wrk's latency report in ms, whatever unit it printed.
ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.3f", v}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RPS P50 P99
for round in $(seq "$REPEAT"); do
  for obj in small large; do
    for s in "${SERVERS[@]}"; do
      log "round $round: $s /$obj.bin"
      out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: bench.test' "${URL[$s]}/$obj.bin")
      if echo "$out" | grep -q 'Non-2xx'; then log "$s: errors under load"; echo "$out" >&2; exit 1; fi
      RPS[$s,$obj]+="$(echo "$out" | awk '/^Requests\/sec/ {print $2}') "
      P50[$s,$obj]+="$(echo "$out" | awk '$1 == "50%" {print $2}' | ms) "
      P99[$s,$obj]+="$(echo "$out" | awk '$1 == "99%" {print $2}' | ms) "
    done
  done
done

printf '\ncache hits, %s s x %s rounds, %s connections, median; gridedge %s, %s%s\n' \
  "$DURATION" "$REPEAT" "$CONNS" \
  "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')" "$(nginx -v 2>&1)" \
  "$([ "$HAVE_VARNISH" = 1 ] && echo ", $(varnishd -V 2>&1 | head -1)")"
printf '%-7s %-9s %10s %9s %9s\n' object server req/s p50_ms p99_ms
for obj in small large; do
  for s in "${SERVERS[@]}"; do
    printf '%-7s %-9s %10.0f %9.3f %9.3f\n' "$obj" "$s" \
      "$(printf '%s\n' ${RPS[$s,$obj]} | median)" \
      "$(printf '%s\n' ${P50[$s,$obj]} | median)" \
      "$(printf '%s\n' ${P99[$s,$obj]} | median)"
  done
  ge_rps=$(printf '%s\n' ${RPS[gridedge,$obj]} | median)
  ge_p99=$(printf '%s\n' ${P99[gridedge,$obj]} | median)
  for s in "${SERVERS[@]:1}"; do
    rps=$(printf '%s\n' ${RPS[$s,$obj]} | median)
    p99=$(printf '%s\n' ${P99[$s,$obj]} | median)
    printf '%-7s %-9s %9.2fx %19.2fx\n' "$obj" "ge/$s" \
      "$(echo "$ge_rps / $rps" | bc -l)" "$(echo "$ge_p99 / $p99" | bc -l)"
  done
done
