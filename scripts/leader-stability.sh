#!/usr/bin/env bash
# Leader stability under CPU saturation: a 3-node loopback cluster (plain
# HTTP, insecure cluster port) runs for DURATION seconds while one busy loop
# per core competes with it; the raft term of every node is sampled every
# 2 s. Each election raises the term, so the cluster's term at the end minus
# at the start is the number of elections (pre-vote rounds do not count).
# Extra arguments are passed to every `halapi serve` (e.g. raft timing flags).
# Usage: scripts/leader-stability.sh [BIN] [DURATION_S] [serve flags...]
set -euo pipefail
BIN=${1:-bin/halapi}
DUR=${2:-600}
shift 2 || true
DIR=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
base=$((20000 + RANDOM % 20000))
for i in 1 2 3; do
  "$BIN" serve --node-id "n$i" --data-dir "$DIR/n$i" --listen "127.0.0.1:$((base + i))" --plain-http \
    --cluster-listen "127.0.0.1:$((base + 10 + i))" --gossip-listen "127.0.0.1:$((base + 20 + i))" \
    --join "127.0.0.1:$((base + 21))" --bootstrap-expect 3 --insecure-cluster --log-level warn "$@" \
    >"$DIR/n$i.log" 2>&1 &
  pids+=($!)
done
term() { # node number -> raft term (empty when unavailable)
  "$BIN" cluster status -o json --data-dir "$DIR/n$1" 2>/dev/null |
    sed -n 's/.*"term": *"\{0,1\}\([0-9]*\).*/\1/p' | head -1
}
for _ in $(seq 1 300); do
  [ -n "$(term 1)" ] && [ "$(term 1)" != 0 ] && curl -fsS "http://127.0.0.1:$((base + 1))/health" >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 2
start=$(term 1)
for _ in $(seq 1 "$(nproc)"); do
  (while :; do :; done) &
  pids+=($!)
done
echo "cluster up (term $start); $(nproc) busy loops running for ${DUR}s"
end_at=$(( $(date +%s) + DUR ))
last=$start
while [ "$(date +%s)" -lt "$end_at" ]; do
  sleep 2
  t=$(term 1)
  if [ -n "$t" ] && [ "$t" != "$last" ]; then
    echo "$(date -u +%T) term $last -> $t"
    last=$t
  fi
done
final=$(term 1)
echo "elections in ${DUR}s under CPU saturation: $(( final - start )) (term $start -> $final)"
grep -h "leader\|election\|lease" "$DIR"/n*.log | grep -iv "^$" | tail -20 || true
