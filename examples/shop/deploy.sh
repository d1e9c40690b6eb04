#!/usr/bin/env bash
# The shop as separate processes on one machine: `switchboard serve`, the payment provider,
# and each service as its own `shop <service>` process with its own SQLite database, all
# talking through the server. Ctrl-C (or SIGTERM) stops every process cleanly, services first.
#
#   bash examples/shop/deploy.sh [data-dir]     # default ./shop-deploy
#
# Ports (loopback): storefront 8080, inventory gRPC 8082, provider 8081, broker gRPC 50051 and
# HTTP 8090. SHOP_BROKER / SHOP_DB style URLs are what change to run on RabbitMQ, NATS or
# PostgreSQL instead (see `shop <service> --help`).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:-shop-deploy}
mkdir -p "$data"
cargo build --release --bin switchboard --bin shop
bin=${CARGO_TARGET_DIR:-target}/release
pids=()
stop() {
  trap - INT TERM EXIT
  stopping=1
  # Services first (they finish what is in flight), then the broker.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  kill -TERM "${pids[0]}" 2>/dev/null || true
  wait "${pids[0]}" 2>/dev/null || true
  echo "shop stopped"
}
trap stop INT TERM EXIT

"$bin/switchboard" serve --data-dir "$data/broker" --http-addr 127.0.0.1:8090 --grpc-addr 127.0.0.1:50051 \
  >"$data/switchboard.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "switchboard serving" "$data/switchboard.log" && break; sleep 0.1; done
export SHOP_BROKER=switchboard://127.0.0.1:50051
# Every service sends its spans to the broker's service graph (the map at /dashboard/); the
# provider stands for a third party and sends none.
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8090
"$bin/shop" provider --http 127.0.0.1:8081 >"$data/provider.log" 2>&1 & pids+=($!)
"$bin/shop" inventory --db "sqlite:$data/inventory.db" --grpc 127.0.0.1:8082 >"$data/inventory.log" 2>&1 & pids+=($!)
"$bin/shop" payment --db "sqlite:$data/payment.db" --provider-url http://127.0.0.1:8081 >"$data/payment.log" 2>&1 & pids+=($!)
"$bin/shop" email --db "sqlite:$data/email.db" --maildir "$data/mail" --instances 2 >"$data/email.log" 2>&1 & pids+=($!)
"$bin/shop" shipping --db "sqlite:$data/shipping.db" >"$data/shipping.log" 2>&1 & pids+=($!)
"$bin/shop" order --db "sqlite:$data/order.db" --http 127.0.0.1:8080 --inventory-grpc-url http://127.0.0.1:8082 \
  >"$data/order.log" 2>&1 & pids+=($!)
echo "storefront REST API: http://127.0.0.1:8080/orders (logs and data in $data; Ctrl-C stops)"
echo "the live map: http://127.0.0.1:8090/dashboard/ (or: switchboard top --server http://127.0.0.1:8090)"
wait -n "${pids[@]}" || true
[[ -n ${stopping:-} ]] || echo "a process ended on its own; stopping the rest" >&2
