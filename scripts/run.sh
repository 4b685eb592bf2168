#!/usr/bin/env bash
# make run: one local halapi node with a ready bouncer key and machine.
set -euo pipefail
BIN=${1:-bin/halapi}
DATA=${HALAPI_DATA:-data}
LISTEN=${HALAPI_LISTEN:-127.0.0.1:8080}
URL="http://$LISTEN"
mkdir -p "$DATA"
"$BIN" serve --data-dir "$DATA" --listen "$LISTEN" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  if curl -fsS "$URL/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 $PID 2>/dev/null; then echo "halapi exited; see the log above" >&2; exit 1; fi
  sleep 0.1
done
curl -fsS "$URL/health" >/dev/null
KEY_FILE="$DATA/bouncer.key"
if [ ! -s "$KEY_FILE" ]; then
  "$BIN" bouncers add demo-bouncer --data-dir "$DATA" -o raw > "$KEY_FILE"
  chmod 600 "$KEY_FILE"
fi
CREDS="$DATA/local_api_credentials.yaml"
if [ ! -s "$CREDS" ]; then
  "$BIN" machines add demo-agent --data-dir "$DATA" -f "$CREDS" -u "$URL" >/dev/null
fi
cat <<MSG

halapi is running.
  LAPI URL:           $URL/
  bouncer API key:    $(cat "$KEY_FILE")   (also in $KEY_FILE)
  agent credentials:  $CREDS   (use as crowdsec's local_api_credentials.yaml)
  admin:              $BIN machines list --data-dir $DATA
  try:                curl -H "X-Api-Key: $(cat "$KEY_FILE")" "$URL/v1/decisions/stream?startup=true"

Ctrl-C stops it; the data stays in $DATA.
MSG
wait $PID
