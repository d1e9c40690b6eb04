#!/usr/bin/env bash
# The shop's benchmark: sustained checkouts per second (closed loop, as fast as the
# concurrency allows) and checkout latency at a fixed rate (open loop), first all-in-one on
# the embedded broker, then every service as its own process on `switchboard serve`
# (deploy.sh). Each run ends by balancing the books; a run whose books do not balance fails.
#
#   bash examples/shop/bench.sh [orders] [concurrency] [rate]    # defaults 3000 64 50
#
# Figures go to stdout as one line per run, and the JSON summaries to $out (default
# target/shop-bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
orders=${1:-3000}
concurrency=${2:-64}
rate=${3:-50}
out=${out:-target/shop-bench}
cargo build --release --bin switchboard --bin shop
bin=${CARGO_TARGET_DIR:-target}/release
rm -rf "$out" && mkdir -p "$out"

wait_for_storefront() {
  for _ in $(seq 1 300); do curl -sf localhost:8080/orders?limit=1 >/dev/null && return 0; sleep 0.1; done
  echo "the storefront did not come up" >&2; return 1
}

run_loads() { # $1: label, $2: data dir
  "$bin/shop" load --orders "$orders" --concurrency "$concurrency" --check-data-dir "$2" --json >"$out/$1-throughput.json"
  "$bin/shop" load --orders "$((rate * 20))" --rate "$rate" --concurrency 1000 --check-data-dir "$2" --json >"$out/$1-latency.json"
  for kind in throughput latency; do
    python3 - "$1" "$kind" "$out/$1-$kind.json" <<'PY'
import json, sys
label, kind, path = sys.argv[1:]
r = json.load(open(path))
load, books = r["load"], r["books"]
ok = books is not None and not books["violations"] and books["pending"] == 0
print(f"{label:13} {kind:10} {load['requested']:6} orders  {load['checkouts_per_second']:7.1f} checkouts/s  "
      f"p50 {load['latency_ms']['p50']:7.1f} ms  p99 {load['latency_ms']['p99']:7.1f} ms  max {load['latency_ms']['max']:7.1f} ms  "
      f"unsettled {load['unsettled']}  books {'balanced' if ok else 'NOT BALANCED'}")
PY
  done
}

# All in one process, embedded broker.
data="$out/all-in-one"
"$bin/shop" --data-dir "$data" >"$out/all-in-one.log" 2>&1 &
shop_pid=$!
trap 'kill $shop_pid 2>/dev/null || true' EXIT
wait_for_storefront
run_loads all-in-one "$data"
kill -TERM $shop_pid; wait $shop_pid || true

# One process per service on switchboard serve.
data="$out/multi-process"
bash examples/shop/deploy.sh "$data" >"$out/multi-process.log" 2>&1 &
deploy_pid=$!
trap 'kill -TERM $deploy_pid 2>/dev/null || true' EXIT
wait_for_storefront
run_loads multi-process "$data"
kill -TERM $deploy_pid; wait $deploy_pid || true
