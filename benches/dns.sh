#!/usr/bin/env bash
# benches/dns.sh: gridedge against Unbound, side by side, with dnsperf.
#
# Same machine, same query set, same client settings, one run, loopback only
# (127.0.77.0/24). Every server is started here and killed on exit.
#
# Cases (CASES="local forward" by default):
#   local    answers from a local authoritative zone: gridedge serves
#            zones/bench.test.zone from its zones dir, Unbound the same
#            records as local-zone/local-data;
#   forward  cached forwarded answers: both forward to a third server (an
#            Unbound on 127.0.77.1 serving example.net with $FWD_NAMES names);
#            both caches are warmed with the whole query set, then measured.
#   registry registry answers: gridedge answers grid. from a devnet chain
#            whose genesis holds $REG_NAMES names (A, AAAA, TXT each; the
#            state verified at start), Unbound the same records as
#            local-zone/local-data (what an operator would otherwise run).
#   A new case is a function `case_<name>` that writes its query file and
#   tells which servers to measure; see case_local and the note at the end.
#
# For each case and server it measures
#   qps   max throughput: dnsperf unthrottled for $DURATION s
#         ($CLIENTS sockets, $OUTSTANDING queries in flight);
#   p50/p99 latency at a fixed offered load ($LAT_QPS q/s for $LAT_DURATION s),
#         from dnsperf -v per-query latencies (dnsperf 2.10 has no
#         histogram option), nearest-rank percentiles, timeouts counted as
#         infinitely slow;
# and the ratio gridedge/Unbound of each (qps: higher is better; latency:
# lower is better).
#
# Knobs (environment): DURATION LAT_DURATION LAT_QPS CLIENTS OUTSTANDING
# DNSPERF_THREADS SERVER_THREADS REPEAT (rounds per case, servers alternating,
# median reported; default 1) FWD_NAMES CASES SERVERS (default
# "unbound gridedge") GRIDEDGE_BIN (default target/release/gridedge, built
# if missing) KEEP_WORK=1 (keep the temp dir with configs and logs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-15}
LAT_DURATION=${LAT_DURATION:-10}
LAT_QPS=${LAT_QPS:-10000}
CLIENTS=${CLIENTS:-16}
OUTSTANDING=${OUTSTANDING:-200}
DNSPERF_THREADS=${DNSPERF_THREADS:-1}
SERVER_THREADS=${SERVER_THREADS:-2}
REPEAT=${REPEAT:-1}
FWD_NAMES=${FWD_NAMES:-10000}
LOCAL_NAMES=${LOCAL_NAMES:-1000}
REG_NAMES=${REG_NAMES:-1000}
CASES=${CASES:-"local forward registry"}
SERVERS=${SERVERS:-"unbound gridedge"}
GRIDEDGE_BIN=${GRIDEDGE_BIN:-$ROOT/target/release/gridedge}

# Loopback only. One /24 of 127/8 that nothing else here uses.
UPSTREAM_ADDR=127.0.77.1 UPSTREAM_PORT=5301
UNBOUND_ADDR=127.0.77.2 UNBOUND_PORT=5302
GRIDEDGE_ADDR=127.0.77.3 GRIDEDGE_PORT=5303
GRIDEDGE_ADMIN=127.0.77.3:9103

PATH="$PATH:/usr/sbin:/sbin"
for tool in dnsperf unbound unbound-checkconf dig; do
  command -v "$tool" >/dev/null || {
    echo "dns.sh: $tool not found (scripts/test.sh installs it)" >&2
    exit 1
  }
done

WORK=$(mktemp -d /tmp/gridedge-bench.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "dns.sh: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[dns.sh] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- fixtures
# One generator for both servers, so they serve exactly the same data.

# bench.test: SOA, NS, $LOCAL_NAMES hosts with A and AAAA, an MX and a TXT.
# Written as an RFC 1035 zone file (gridedge) and as local-data (Unbound).
gen_local_zone() {
  local zone=$1 unbound_conf=$2
  {
    echo "\$ORIGIN bench.test."
    echo "\$TTL 3600"
    echo "@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 3600 1209600 300"
    echo "@ IN NS ns1.bench.test."
    echo "ns1 IN A 192.0.2.53"
    echo "@ IN MX 10 mail.bench.test."
    echo "@ IN TXT \"v=spf1 -all\""
    echo "mail IN A 192.0.2.25"
    awk -v n="$LOCAL_NAMES" 'BEGIN { for (i = 0; i < n; i++) {
      printf "host%d IN A 198.18.%d.%d\n", i, int(i / 250), i % 250 + 1
      printf "host%d IN AAAA 2001:db8::%x\n", i, i + 1 } }'
  } >"$zone"
  {
    echo "  local-zone: \"bench.test.\" static"
    # Same records, absolute names, same TTLs; single quotes outside so the
    # TXT's double quotes pass through.
    awk -v q="'" '/^\$/ { next } { name = ($1 == "@") ? "bench.test." : $1 ".bench.test."
      $1 = ""; sub(/^ /, ""); sub(/^IN /, "")
      printf "  local-data: %s%s 3600 IN %s%s\n", q, name, $0, q }' "$zone"
  } >"$unbound_conf"
}

# example.net, served only by the upstream: $FWD_NAMES A records, a day's TTL
# so nothing expires during the run.
gen_upstream_data() {
  {
    echo "  local-zone: \"example.net.\" static"
    echo "  local-data: \"example.net. 86400 IN SOA ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 300\""
    awk -v n="$FWD_NAMES" 'BEGIN { for (i = 0; i < n; i++)
      printf "  local-data: \"name%d.example.net. 86400 IN A 198.19.%d.%d\"\n", i, int(i / 250), i % 250 + 1 }'
  } >"$1"
}

# grid.: $REG_NAMES registry names in a devnet genesis (gridedge) and the
# same records as local-data (Unbound). The chain parameters and the owner
# are the devnet's (zones/genesis.toml); only the names differ.
gen_registry() {
  local genesis=$1 unbound_conf=$2
  {
    sed -n '/^chain_id/p; /^sequencer/p; /^difficulty_bits/p; /^registration_period_blocks/p; /^max_lifetime_blocks/p; /^time_unix_secs/p' \
      "$ROOT/zones/genesis.toml"
    awk -v n="$REG_NAMES" 'BEGIN { for (i = 0; i < n; i++) {
      printf "[[names]]\nname = \"reg%d\"\n", i
      printf "owner = \"f916ade25809d3e3a8bea31d580dfc7dcfcbcf1256100222a85a849fed8e9a86\"\n"
      printf "expiry_height = 1000000\nrecords = [\n"
      printf "  { type = \"A\", ttl_secs = 3600, data = \"198.18.%d.%d\" },\n", int(i / 250), i % 250 + 1
      printf "  { type = \"AAAA\", ttl_secs = 3600, data = \"2001:db8::%x\" },\n", i + 1
      printf "  { type = \"TXT\", ttl_secs = 3600, data = \"name-%d\" },\n]\n", i } }'
  } >"$genesis"
  {
    echo "  local-zone: \"grid.\" static"
    echo "  local-data: 'grid. 60 IN SOA grid. hostmaster.grid. 0 1800 900 604800 60'"
    awk -v n="$REG_NAMES" -v q="'" 'BEGIN { for (i = 0; i < n; i++) {
      printf "  local-data: %sreg%d.grid. 3600 IN A 198.18.%d.%d%s\n", q, i, int(i / 250), i % 250 + 1, q
      printf "  local-data: %sreg%d.grid. 3600 IN AAAA 2001:db8::%x%s\n", q, i, i + 1, q
      printf "  local-data: %sreg%d.grid. 3600 IN TXT \"name-%d\"%s\n", q, i, i, q } }'
  } >>"$unbound_conf"
}

# ---------------------------------------------------------------- servers

wait_answers() { # addr port qname: until the server answers, at most ~10 s
  local i
  for i in $(seq 1 100); do
    if dig +time=1 +tries=1 +short -p "$2" "@$1" "$3" A >/dev/null 2>&1 &&
      [ -n "$(dig +time=1 +tries=1 +short -p "$2" "@$1" "$3" A 2>/dev/null)" ]; then
      return 0
    fi
    sleep 0.1
  done
  log "no answer for $3 from $1:$2"
  return 1
}

unbound_conf_common() { # addr port threads
  cat <<EOF
server:
  interface: $1
  port: $2
  num-threads: $3
  so-reuseport: yes
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$WORK"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  # No trust anchor and no validation: gridedge does not validate either,
  # and the test zones are unsigned.
  module-config: "iterator"
EOF
}

start_upstream() {
  gen_upstream_data "$WORK/upstream-data.conf"
  {
    unbound_conf_common "$UPSTREAM_ADDR" "$UPSTREAM_PORT" 1
    echo "  include: \"$WORK/upstream-data.conf\""
    echo "remote-control:"
    echo "  control-enable: no"
  } >"$WORK/upstream.conf"
  unbound-checkconf "$WORK/upstream.conf" >/dev/null
  unbound -d -c "$WORK/upstream.conf" >"$WORK/upstream.log" 2>&1 &
  PIDS+=($!)
  wait_answers "$UPSTREAM_ADDR" "$UPSTREAM_PORT" name0.example.net
}

start_unbound() {
  {
    unbound_conf_common "$UNBOUND_ADDR" "$UNBOUND_PORT" "$SERVER_THREADS"
    echo "  do-not-query-localhost: no"
    echo "  include: \"$WORK/unbound-local.conf\""
    echo "forward-zone:"
    echo "  name: \".\""
    echo "  forward-addr: $UPSTREAM_ADDR@$UPSTREAM_PORT"
    echo "remote-control:"
    echo "  control-enable: no"
  } >"$WORK/unbound.conf"
  unbound-checkconf "$WORK/unbound.conf" >/dev/null
  unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
  PIDS+=($!)
  wait_answers "$UNBOUND_ADDR" "$UNBOUND_PORT" host0.bench.test
}

# The only place that knows gridedge's config keys (config/gridedge.toml is
# the reference). Worker threads: tokio reads TOKIO_WORKER_THREADS.
gridedge_config() {
  cat <<EOF
data_dir = "$WORK/gridedge-data"

[log]
format = "human"
level = "warn"

[dns]
listen_udp = ["$GRIDEDGE_ADDR:$GRIDEDGE_PORT"]
listen_tcp = ["$GRIDEDGE_ADDR:$GRIDEDGE_PORT"]
listen_tls = []
listen_https = []
zones_dir = "$WORK/zones"
allow_recursion = ["127.0.0.0/8"]

[dns.forward]
upstreams = ["udp://$UPSTREAM_ADDR:$UPSTREAM_PORT"]

[dns.rate_limit]
exempt = ["127.0.0.0/8"]

[admin]
listen = "$GRIDEDGE_ADMIN"

[registry]
genesis = "$WORK/registry-genesis.toml"
EOF
}

start_gridedge() {
  if [ ! -x "$GRIDEDGE_BIN" ]; then
    log "building gridedge (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin gridedge)
  fi
  gridedge_config >"$WORK/gridedge.toml"
  TOKIO_WORKER_THREADS=$SERVER_THREADS \
    "$GRIDEDGE_BIN" run --config "$WORK/gridedge.toml" >"$WORK/gridedge.log" 2>&1 &
  PIDS+=($!)
  if ! wait_answers "$GRIDEDGE_ADDR" "$GRIDEDGE_PORT" host0.bench.test; then
    tail -n 20 "$WORK/gridedge.log" >&2
    return 1
  fi
}

server_addr() { case $1 in unbound) echo "$UNBOUND_ADDR $UNBOUND_PORT" ;; gridedge) echo "$GRIDEDGE_ADDR $GRIDEDGE_PORT" ;; esac; }

# ---------------------------------------------------------------- cases
# A case writes its query file to $1 and may warm the servers.

case_local() {
  # Every host's A and AAAA, the apex MX and TXT, and 1 in 20 a name that
  # does not exist (NXDOMAIN with the SOA), interleaved.
  awk -v n="$LOCAL_NAMES" 'BEGIN { for (i = 0; i < n; i++) {
    printf "host%d.bench.test A\nhost%d.bench.test AAAA\n", i, i
    if (i % 10 == 0) printf "missing%d.bench.test A\n", i
    if (i % 100 == 0) printf "bench.test MX\nbench.test TXT\n" } }' >"$1"
}

case_registry() {
  # Every name's A and AAAA, 1 in 10 its TXT, and 1 in 10 a name nobody
  # registered (NXDOMAIN with the SOA).
  awk -v n="$REG_NAMES" 'BEGIN { for (i = 0; i < n; i++) {
    printf "reg%d.grid A\nreg%d.grid AAAA\n", i, i
    if (i % 10 == 0) printf "reg%d.grid TXT\nnobody%d.grid A\n", i, i } }' >"$1"
}

case_forward() {
  awk -v n="$FWD_NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "name%d.example.net A\n", i }' >"$1"
  local s addr port
  for s in $SERVERS; do
    read -r addr port <<<"$(server_addr "$s")"
    # Twice through the set: the first pass fills the cache, the second
    # checks that it did (dnsperf exits 0 either way; the summary is logged).
    dnsperf -s "$addr" -p "$port" -d "$1" -n 2 -c 4 -q 50 -t 2 \
      >"$WORK/warm-$s.txt" 2>&1
    grep -E 'Queries (completed|lost)' "$WORK/warm-$s.txt" | sed "s/^/[dns.sh] warm $s:/" >&2
  done
}

# ---------------------------------------------------------------- measuring

measure_qps() { # server queryfile -> "qps lost"
  local addr port out
  read -r addr port <<<"$(server_addr "$1")"
  out=$WORK/qps-$1-$CASE.txt
  dnsperf -s "$addr" -p "$port" -d "$2" -l "$DURATION" -c "$CLIENTS" \
    -q "$OUTSTANDING" -T "$DNSPERF_THREADS" -t 2 >"$out" 2>&1
  awk '/Queries per second:/ { q = $4 } /Queries lost:/ { l = $3 }
       END { printf "%.0f %s\n", q, l }' "$out"
}

measure_latency() { # server queryfile -> "p50_ms p99_ms lost"
  local addr port out
  read -r addr port <<<"$(server_addr "$1")"
  out=$WORK/lat-$1-$CASE.txt
  dnsperf -s "$addr" -p "$port" -d "$2" -l "$LAT_DURATION" -c "$CLIENTS" \
    -q "$OUTSTANDING" -T "$DNSPERF_THREADS" -Q "$LAT_QPS" -t 2 -v >"$out" 2>&1
  # "> NOERROR name type 0.000123": the last field is the latency in s.
  # Lost queries are counted at +inf, so a p99 past the answered ones shows.
  local lost
  lost=$(awk '/Queries lost:/ { print $3 }' "$out")
  grep '^> ' "$out" | awk '{ print $NF }' | sort -g |
    awk -v lost="${lost:-0}" '
      { v[NR] = $1 }
      END {
        n = NR + lost
        if (n == 0) { print "nan nan 0"; exit }
        split("0.50 0.99", ps, " ")
        for (k = 1; k <= 2; k++) {
          r = int(ps[k] * n); if (r < ps[k] * n) r++; if (r < 1) r = 1
          out[k] = (r <= NR) ? sprintf("%.3f", v[r] * 1000) : "timeout"
        }
        printf "%s %s %d\n", out[1], out[2], lost
      }'
}

rcodes() { sed -n 's/^ *Response codes: *//p' "$1"; }

# Median of the arguments ("timeout" sorts above every number).
median() { printf '%s\n' "$@" | sed 's/^timeout$/inf/' | sort -g |
  awk '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)]; print (m == "inf") ? "timeout" : m }'; }
sum() { printf '%s\n' "$@" | awk '{ t += $1 } END { print t + 0 }'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }

# ---------------------------------------------------------------- run

gen_local_zone "$WORK/bench.test.zone" "$WORK/unbound-local.conf"
gen_registry "$WORK/registry-genesis.toml" "$WORK/unbound-local.conf"
mkdir -p "$WORK/zones" "$WORK/gridedge-data"
cp "$WORK/bench.test.zone" "$WORK/zones/bench.test.zone"

start_upstream
for s in $SERVERS; do "start_$s"; done

cat <<EOF

gridedge vs Unbound, dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }'), $(date -u '+%Y-%m-%d %H:%M UTC')
machine: $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)
unbound $(unbound -V | awk 'NR == 1 { print $2 }'), gridedge $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
server threads $SERVER_THREADS each; dnsperf: $CLIENTS clients, $OUTSTANDING in flight, $DNSPERF_THREADS thread(s)
qps: unthrottled ${DURATION}s; latency: at $LAT_QPS q/s for ${LAT_DURATION}s; median of $REPEAT round(s)
load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)

EOF
printf '%-8s %-9s %10s %6s %9s %9s %6s\n' case server qps lost p50_ms p99_ms lost
declare -A R
RCODES=()
for CASE in $CASES; do
  qf=$WORK/queries-$CASE.txt
  "case_$CASE" "$qf"
  # Rounds alternate the servers, so a burst of load from elsewhere on the
  # machine hits both; the median of the rounds is reported.
  declare -A Q=() L=() P50=() P99=() LL=()
  for round in $(seq 1 "$REPEAT"); do
    for s in $SERVERS; do
      read -r q ql <<<"$(measure_qps "$s" "$qf")"
      read -r p50 p99 ll <<<"$(measure_latency "$s" "$qf")"
      Q[$s]+="$q " L[$s]+="$ql " P50[$s]+="$p50 " P99[$s]+="$p99 " LL[$s]+="$ll "
      [ "$REPEAT" -gt 1 ] && log "round $round $CASE $s: qps $q p50 $p50 p99 $p99"
    done
  done
  for s in $SERVERS; do
    q=$(median ${Q[$s]}) ql=$(sum ${L[$s]}) p50=$(median ${P50[$s]}) p99=$(median ${P99[$s]}) ll=$(sum ${LL[$s]})
    R[$CASE.$s]="$q $p50 $p99"
    RCODES+=("$(printf '%-8s %-9s' "$CASE" "$s") $(rcodes "$WORK/qps-$s-$CASE.txt")")
    printf '%-8s %-9s %10s %6s %9s %9s %6s\n' "$CASE" "$s" "$q" "$ql" "$p50" "$p99" "$ll"
  done
  if [ -n "${R[$CASE.unbound]:-}" ] && [ -n "${R[$CASE.gridedge]:-}" ]; then
    read -r uq u50 u99 <<<"${R[$CASE.unbound]}"
    read -r gq g50 g99 <<<"${R[$CASE.gridedge]}"
    printf '%-8s %-9s %9sx %6s %8sx %8sx\n' "$CASE" "ge/unb" "$(ratio "$gq" "$uq")" "" \
      "$(ratio "$g50" "$u50")" "$(ratio "$g99" "$u99")"
  fi
done
echo
echo "response codes (qps runs; both servers should match):"
printf '  %s\n' "${RCODES[@]}"
echo
echo "ge/unb: gridedge divided by Unbound; qps above 1 and latency below 1 favour gridedge."

# Adding a case: write case_NAME, which writes its query file to $1 (and,
# if the servers need data, generate it before the servers start, as
# gen_local_zone does), then run with CASES="... NAME". A case that only
# gridedge can serve runs with SERVERS=gridedge, or prints no ratio when
# Unbound is absent.
