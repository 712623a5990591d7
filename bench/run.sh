#!/usr/bin/env bash
# Benchmarks Portcullis against the floor: a no-op tonic Check server.
#
# Starts `portcullis bench floor`, loads it with `portcullis bench check --server-pid`, stops it;
# then starts `portcullis run --server ... policies/`, loads it the same way, stops it; and prints
# a Markdown table: rps, p50, p99, server CPU per request and peak RSS of each, and the ratio
# Portcullis/floor for p99, CPU and RSS. One server runs at a time, so on a small machine the
# load generator only competes with the server under test.
#
# Usage: bench/run.sh [--case FILE] [--duration SECS] [--warmup SECS] [--concurrency N]
#                     [--connections N] [POLICY_DIR]
#
# Environment (flags win):
#   BENCH_CASE           request case file (default bench/case.yaml)
#   BENCH_AUTHORIZATION  value for the Authorization header, overriding the case's
#                        (e.g. 'Bearer eyJ...': a token the example policy accepts)
#   BENCH_DURATION       measured seconds per server (default 10, at most 600)
#   BENCH_WARMUP         unmeasured seconds before that (default 2, at most 600)
#   BENCH_CONCURRENCY    workers (default 32); BENCH_CONNECTIONS  HTTP/2 connections (default 2)
#   PORTCULLIS           binary to use; when unset, `cargo build --release` builds
#                        ${CARGO_TARGET_DIR:-target}/release/portcullis first
#   BENCH_RUN_ARGS       extra `portcullis run` arguments, e.g. '--set=runtime.policy_engine=auto'
#   BENCH_SERVER_CPUS    a taskset CPU list the servers run on (e.g. 0-1); BENCH_CLIENT_CPUS the same
#                        for the load generator; unset: no pinning
#   FLOOR_ADDR           floor's gRPC address (default 127.0.0.1:9292)
#   GRPC_ADDR, HTTP_ADDR Portcullis's gRPC and HTTP addresses (default 127.0.0.1:9191, :8181)
#
# The JSON line of each run goes to stderr; the table to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "run.sh: error: $*" >&2; exit 1; }
note() { echo "run.sh: $*" >&2; }

CASE="${BENCH_CASE:-bench/case.yaml}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONCURRENCY="${BENCH_CONCURRENCY:-32}"
CONNECTIONS="${BENCH_CONNECTIONS:-2}"
POLICIES="policies/"
FLOOR_ADDR="${FLOOR_ADDR:-127.0.0.1:9292}"
GRPC_ADDR="${GRPC_ADDR:-127.0.0.1:9191}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8181}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --case) CASE="${2:?--case needs a file}"; shift 2 ;;
    --duration) DURATION="${2:?--duration needs seconds}"; shift 2 ;;
    --warmup) WARMUP="${2:?--warmup needs seconds}"; shift 2 ;;
    --concurrency) CONCURRENCY="${2:?--concurrency needs a number}"; shift 2 ;;
    --connections) CONNECTIONS="${2:?--connections needs a number}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown flag $1 (see --help)" ;;
    *) POLICIES="$1"; shift ;;
  esac
done

for pair in "duration:$DURATION" "warmup:$WARMUP"; do
  name="${pair%%:*}" value="${pair#*:}"
  [[ "$value" =~ ^[0-9]+$ ]] || die "--$name must be whole seconds, not '$value'"
  (( value <= 600 )) || die "--$name must be at most 600 seconds"
done
(( DURATION > 0 )) || die "--duration must be more than 0"
[[ -f "$CASE" ]] || die "case file $CASE not found"

if [[ -z "${PORTCULLIS:-}" ]]; then
  note "building the release binary (cargo build --release)"
  cargo build --release --quiet --bin portcullis
  PORTCULLIS="${CARGO_TARGET_DIR:-target}/release/portcullis"
fi
[[ -x "$PORTCULLIS" ]] || die "binary $PORTCULLIS not found or not executable"

read -r -a RUN_ARGS <<<"${BENCH_RUN_ARGS:-}"
SERVER_PIN=()
CLIENT_PIN=()
if [[ -n "${BENCH_SERVER_CPUS:-}" || -n "${BENCH_CLIENT_CPUS:-}" ]]; then
  command -v taskset >/dev/null || die "BENCH_SERVER_CPUS/BENCH_CLIENT_CPUS need taskset (util-linux)"
fi
[[ -n "${BENCH_SERVER_CPUS:-}" ]] && SERVER_PIN=(taskset -c "$BENCH_SERVER_CPUS")
[[ -n "${BENCH_CLIENT_CPUS:-}" ]] && CLIENT_PIN=(taskset -c "$BENCH_CLIENT_CPUS")
REQUEST_ARGS=(--case "$CASE")
if [[ -n "${BENCH_AUTHORIZATION:-}" ]]; then
  REQUEST_ARGS+=(-H "authorization: ${BENCH_AUTHORIZATION}")
fi

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")"
SERVER_PID=""

stop_server() {
  local pid="$SERVER_PID"
  SERVER_PID=""
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_server
  rm -rf "$LOGDIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether a Check server answers at $1 (any answer, allowed or denied).
answers() {
  local out
  out="$("$PORTCULLIS" authorize --addr "$1" --timeout 1s "${REQUEST_ARGS[@]}" 2>/dev/null || true)"
  [[ -n "$out" ]]
}

# start_server NAME ADDR WAIT_SECS COMMAND...: starts COMMAND, waits until ADDR answers.
start_server() {
  local name="$1" addr="$2" wait_secs="$3"
  shift 3
  if answers "$addr"; then
    die "something already answers Checks at $addr; stop it or set another address"
  fi
  "$@" >"$LOGDIR/$name.log" 2>&1 &
  SERVER_PID=$!
  local tries=$(( wait_secs * 10 ))
  for _ in $(seq 1 "$tries"); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "--- $name log (last 20 lines) ---" >&2
      tail -n 20 "$LOGDIR/$name.log" >&2 || true
      SERVER_PID=""
      die "$name exited during start-up: $*"
    fi
    if answers "$addr"; then
      note "$name is up at $addr (pid $SERVER_PID)"
      return 0
    fi
    sleep 0.1
  done
  echo "--- $name log (last 20 lines) ---" >&2
  tail -n 20 "$LOGDIR/$name.log" >&2 || true
  die "$name did not answer at $addr within ${wait_secs}s"
}

# load NAME ADDR: loads the running server, prints its JSON line.
load() {
  local name="$1" addr="$2" line
  note "loading $name: ${DURATION}s after ${WARMUP}s warmup, concurrency $CONCURRENCY over $CONNECTIONS connections"
  line="$(timeout $(( DURATION + WARMUP + 60 )) ${CLIENT_PIN[@]+"${CLIENT_PIN[@]}"} "$PORTCULLIS" bench check --addr "$addr" \
    "${REQUEST_ARGS[@]}" --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
    --duration "${DURATION}s" --warmup "${WARMUP}s" --server-pid "$SERVER_PID")" \
    || die "bench check against $name failed"
  echo "$name: $line" >&2
  printf '%s\n' "$line"
}

# field JSON KEY: a numeric field of a one-line JSON object, or empty.
field() {
  sed -n "s/.*\"$2\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" <<<"$1"
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2fx", a / b }'
}

# ready_ms: milliseconds from spawning the server until /health answers 200 (median of 5).
ready_ms() {
  command -v curl >/dev/null || { echo "n/a"; return; }
  local samples=() start end pid
  for _ in 1 2 3 4 5; do
    start=$(date +%s%N)
    "$PORTCULLIS" run --server --set "plugins.envoy_ext_authz_grpc.addr=$GRPC_ADDR" \
      --addr "$HTTP_ADDR" --log-level error ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} "$POLICIES" \
      >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 2000); do
      curl -sf "http://$HTTP_ADDR/health" >/dev/null 2>&1 && break
      sleep 0.002
    done
    end=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    samples+=($(( (end - start) / 1000000 )))
  done
  printf '%s\n' "${samples[@]}" | sort -n | sed -n 3p
}

start_server floor "$FLOOR_ADDR" 10 ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$PORTCULLIS" bench floor --addr "$FLOOR_ADDR"
FLOOR_JSON="$(load floor "$FLOOR_ADDR")"
stop_server

start_server portcullis "$GRPC_ADDR" 60 ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$PORTCULLIS" run --server \
  --set "plugins.envoy_ext_authz_grpc.addr=$GRPC_ADDR" --addr "$HTTP_ADDR" ${RUN_ARGS[@]+"${RUN_ARGS[@]}"} \
  "$POLICIES"
PORT_JSON="$(load portcullis "$GRPC_ADDR")"
stop_server

READY_MS="$(ready_ms)"
ENGINE=auto
[[ " ${RUN_ARGS[*]-} " == *"policy_engine=interpreter"* ]] && ENGINE=interpreter
EVAL_JSON="$("$PORTCULLIS" bench eval -d "$POLICIES" --case "$CASE" --count 20000 --engine "$ENGINE" \
  data.envoy.authz.allow 2>/dev/null || true)"
echo "eval: $EVAL_JSON" >&2

for pair in "floor:$FLOOR_JSON" "portcullis:$PORT_JSON"; do
  name="${pair%%:*}" json="${pair#*:}"
  errors="$(field "$json" errors)"
  [[ "${errors:-0}" == 0 ]] || note "warning: $name had $errors errors (see first_error above)"
done
if [[ "$(field "$PORT_JSON" ok)" == 0 ]]; then
  note "warning: Portcullis denied every Check, so this measured the deny path;" \
    "put a token the policy accepts in $CASE or BENCH_AUTHORIZATION"
fi

row() {
  local name="$1" json="$2"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
    "$(field "$json" rps)" "$(field "$json" p50_us)" "$(field "$json" p99_us)" \
    "$(field "$json" server_cpu_us_per_req)" "$(field "$json" server_peak_rss_kb)" \
    "$(field "$json" errors)"
}

echo
echo "Check benchmark: case \`$CASE\`, concurrency $CONCURRENCY over $CONNECTIONS HTTP/2 connections, ${DURATION}s measured after ${WARMUP}s warmup, on $(nproc) cores."
echo
echo "| server | rps | p50 µs | p99 µs | CPU µs/req | peak RSS KiB | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row "floor (no-op tonic)" "$FLOOR_JSON"
row "portcullis" "$PORT_JSON"
printf '| portcullis / floor | | | %s | %s | %s | |\n' \
  "$(ratio "$(field "$PORT_JSON" p99_us)" "$(field "$FLOOR_JSON" p99_us)")" \
  "$(ratio "$(field "$PORT_JSON" server_cpu_us_per_req)" "$(field "$FLOOR_JSON" server_cpu_us_per_req)")" \
  "$(ratio "$(field "$PORT_JSON" server_peak_rss_kb)" "$(field "$FLOOR_JSON" server_peak_rss_kb)")"
echo
echo "Policy evaluation (bench eval, same case): p50 $(field "$EVAL_JSON" p50_ns) ns," \
  "mean $(field "$EVAL_JSON" mean_ns) ns; input document built in $(field "$EVAL_JSON" input_build_ns) ns."
echo "Ready (spawn to /health 200, median of 5): ${READY_MS} ms."
