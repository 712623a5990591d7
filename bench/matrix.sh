#!/usr/bin/env bash
# Runs bench/run.sh for each benchmark case and engine and prints one Markdown table:
#
#   boolean  bench/cases/boolean   allow GETs
#   rbac     bench/cases/rbac      Basic-auth RBAC in Rego (base64, split, glob.match, data)
#   jwt      policies/             the README's example: ES256 JWT verified in Rego, roles
#
# each on `auto` (the default: the bytecode VM where it applies) and `interpreter`, with the
# floor (a no-op tonic Check server) measured in the same run. Then, where the machine has more
# than 2N+2 cores, the scaling row: Checks/s of the rbac case with the server pinned to N = 1, 2,
# 4, 8 cores (runtime.worker_threads = N) and the load generator on the others.
#
# Usage: bench/matrix.sh [--duration SECS] [--warmup SECS]   (defaults 10 and 2)
# Environment: PORTCULLIS (binary; built with cargo build --release when unset), and what
# bench/run.sh reads.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=10
WARMUP=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION="${2:?--duration needs seconds}"; shift 2 ;;
    --warmup) WARMUP="${2:?--warmup needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "matrix.sh: error: unknown argument $1 (see --help)" >&2; exit 1 ;;
  esac
done

if [[ -z "${PORTCULLIS:-}" ]]; then
  cargo build --release --quiet --bin portcullis
  PORTCULLIS="${CARGO_TARGET_DIR:-target}/release/portcullis"
fi
export PORTCULLIS

# run CASE_DIR CASE_FILE ENGINE EXTRA_RUN_ARGS [extra run.sh environment...]: prints run.sh's
# table.
run() {
  local dir="$1" case="$2" engine="$3" extra="$4"
  shift 4
  env "$@" BENCH_RUN_ARGS="--set=runtime.policy_engine=$engine $extra ${BENCH_RUN_ARGS:-}" \
    bench/run.sh --case "$case" --duration "$DURATION" --warmup "$WARMUP" "$dir" 2>/dev/null
}

# row TABLE NAME COLUMN: one cell of run.sh's table (columns: 2 rps, 3 p50, 4 p99, 5 CPU, 6 RSS).
cell() {
  awk -F'|' -v name="$2" -v col="$3" '$2 ~ "^ *" name " *$" { gsub(/ /, "", $(col + 1)); print $(col + 1); exit }' <<<"$1"
}

echo "| case | engine | Checks/s | p99 µs | CPU µs/Check | floor CPU µs | CPU × floor | p99 × floor | peak RSS KiB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for spec in "boolean:bench/cases/boolean:bench/cases/boolean/case.yaml" \
            "rbac:bench/cases/rbac:bench/cases/rbac/case.yaml" \
            "jwt:policies:bench/case.yaml"; do
  IFS=: read -r name dir case <<<"$spec"
  for engine in auto interpreter; do
    table="$(run "$dir" "$case" "$engine" "")"
    echo "| $name | $engine | $(cell "$table" portcullis 2) | $(cell "$table" portcullis 4) \
| $(cell "$table" portcullis 5) | $(cell "$table" 'floor \(no-op tonic\)' 5) \
| $(cell "$table" 'portcullis / floor' 5) | $(cell "$table" 'portcullis / floor' 4) \
| $(cell "$table" portcullis 6) |"
  done
done

cores="$(nproc)"
scaling=""
for n in 1 2 4 8; do
  (( cores > 2 * n + 2 )) || break
  table="$(run bench/cases/rbac bench/cases/rbac/case.yaml auto "--set=runtime.worker_threads=$n" \
    BENCH_SERVER_CPUS="0-$(( n - 1 ))" BENCH_CLIENT_CPUS="$n-$(( cores - 1 ))")"
  scaling+=" $n cores: $(cell "$table" portcullis 2) /"
done
echo
if [[ -n "$scaling" ]]; then
  echo "Scaling (rbac, auto, Checks/s):${scaling% /}"
else
  echo "Scaling: not measured (needs more than 2N+2 cores for N = 1; this machine has $cores)"
fi
