#!/usr/bin/env bash
# make run: a 3-node halapi cluster on loopback, formed the production way:
# the first node founds the cluster and its CA, the others join with
# one-time tokens (HTTPS API, mTLS between nodes, encrypted gossip).
# Prints the API URLs, a bouncer API key and an agent certificate + config.
# Ctrl-C stops it; the data stays in ./data.
set -euo pipefail
BIN=${1:-bin/halapi}
DATA=${HALAPI_DATA:-data}
NODES=${HALAPI_NODES:-3}
mkdir -p "$DATA"
# absolute paths: the banner's commands work from any directory
DATA=$(cd "$DATA" && pwd)
case "$BIN" in /*) ;; *) BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")" ;; esac
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

api()    { echo "127.0.0.1:$((8080 + $1))"; }
CA="$DATA/n1/pki/ca.crt"

wait_healthy() { # node number
  for _ in $(seq 1 300); do
    if [ -s "$CA" ] && curl -fsS --cacert "$CA" "https://$(api "$1")/health" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "node n$1 did not start; see $DATA/n$1.log" >&2
  exit 1
}

start() { # node number, extra args...
  local i=$1; shift
  "$BIN" serve --node-id "n$i" --data-dir "$DATA/n$i" --listen "$(api "$i")" \
    --cluster-listen "127.0.0.1:$((8180 + i))" --gossip-listen "127.0.0.1:$((8280 + i))" \
    --metrics-listen "127.0.0.1:$((6060 + i))" "$@" 2>>"$DATA/n$i.log" &
  pids+=($!)
}

if [ -s "$DATA/n1/pki/node.crt" ]; then
  # restart: every node has its certificate; start them together (a
  # leader needs a quorum)
  for i in $(seq 1 "$NODES"); do start "$i" --join 127.0.0.1:8281; done
else
  start 1
  wait_healthy 1
  for i in $(seq 2 "$NODES"); do
    tok=$("$BIN" cluster token --data-dir "$DATA/n1")
    # the token in a private file: on the command line, ps would show it
    (umask 077; printf '%s\n' "$tok" > "$DATA/n$i.join-token")
    start "$i" --join 127.0.0.1:8281 --join-token-file "$DATA/n$i.join-token" --join-api "$(api 1)"
  done
fi
for i in $(seq 1 "$NODES"); do wait_healthy "$i"; done
rm -f "$DATA"/n*.join-token # redeemed: one-time tokens
# writes below need a leader
for _ in $(seq 1 300); do
  if "$BIN" cluster status --data-dir "$DATA/n1" -o json 2>/dev/null | grep -q '"leader": "n'; then break; fi
  sleep 0.1
done

KEY_FILE="$DATA/bouncer.key"
if [ ! -s "$KEY_FILE" ]; then
  "$BIN" bouncers add demo-bouncer --data-dir "$DATA/n1" -o raw > "$KEY_FILE"
  chmod 600 "$KEY_FILE"
fi
if [ ! -s "$DATA/agent/local_api_credentials.yaml" ]; then
  "$BIN" cert issue agent demo-agent --out "$DATA/agent" -u "https://$(api 1)/" --data-dir "$DATA/n1" >/dev/null
fi
"$BIN" cluster status --data-dir "$DATA/n1"
urls=""
for i in $(seq 1 "$NODES"); do urls="$urls https://$(api "$i")/"; done
cat <<MSG

halapi: a $NODES-node cluster is running (HTTPS, mTLS between nodes).
  LAPI URLs:          $urls
  CA certificate:     $CA
  bouncer API key:    $(cat "$KEY_FILE")   (also in $KEY_FILE)
  agent (cert auth):  $DATA/agent/local_api_credentials.yaml   (crowdsec's credentials file)
  admin (any node):   $BIN machines list --data-dir $DATA/n2
  try:                curl --cacert $CA -H "X-Api-Key: $(cat "$KEY_FILE")" "https://$(api 2)/v1/decisions/stream?startup=true"
  metrics:            http://127.0.0.1:6061/metrics (n2: 6062, n3: 6063)
  logs:               $DATA/n*.log

Ctrl-C stops the cluster; the data stays in $DATA (make run again restarts it).
MSG
wait
