#!/usr/bin/env bash
# make run: a 3-node halapi cluster on loopback, with a ready bouncer key and
# agent credentials. Ctrl-C stops it; the data stays in ./data.
set -euo pipefail
BIN=${1:-bin/halapi}
DATA=${HALAPI_DATA:-data}
NODES=${HALAPI_NODES:-3}
mkdir -p "$DATA"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
urls=()
for i in $(seq 1 "$NODES"); do
  api="127.0.0.1:$((8080 + i))"
  "$BIN" serve --node-id "n$i" --data-dir "$DATA/n$i" --listen "$api" \
    --cluster-listen "127.0.0.1:$((8180 + i))" --gossip-listen "127.0.0.1:$((8280 + i))" \
    --join 127.0.0.1:8281 --bootstrap-expect "$NODES" 2>>"$DATA/n$i.log" &
  pids+=($!)
  urls+=("http://$api/")
done
for u in "${urls[@]}"; do
  for _ in $(seq 1 150); do
    if curl -fsS "${u}health" >/dev/null 2>&1; then break; fi
    sleep 0.1
  done
  curl -fsS "${u}health" >/dev/null || { echo "node at $u did not start; see $DATA/*.log" >&2; exit 1; }
done
# wait until the cluster has a leader (writes need one)
for _ in $(seq 1 150); do
  if "$BIN" cluster status --data-dir "$DATA/n1" -o json 2>/dev/null | grep -q '"leader": "n'; then break; fi
  sleep 0.1
done
KEY_FILE="$DATA/bouncer.key"
if [ ! -s "$KEY_FILE" ]; then
  "$BIN" bouncers add demo-bouncer --data-dir "$DATA/n1" -o raw > "$KEY_FILE"
  chmod 600 "$KEY_FILE"
fi
CREDS="$DATA/local_api_credentials.yaml"
if [ ! -s "$CREDS" ]; then
  "$BIN" machines add demo-agent --data-dir "$DATA/n1" -f "$CREDS" -u "${urls[0]}" >/dev/null
fi
"$BIN" cluster status --data-dir "$DATA/n1"
cat <<MSG

halapi: a $NODES-node cluster is running.
  LAPI URLs:          ${urls[*]}
  bouncer API key:    $(cat "$KEY_FILE")   (also in $KEY_FILE)
  agent credentials:  $CREDS   (crowdsec's local_api_credentials.yaml)
  admin (any node):   $BIN machines list --data-dir $DATA/n2
  try:                curl -H "X-Api-Key: $(cat "$KEY_FILE")" "${urls[1]}v1/decisions/stream?startup=true"
  logs:               $DATA/n*.log

Ctrl-C stops the cluster; the data stays in $DATA.
MSG
wait
