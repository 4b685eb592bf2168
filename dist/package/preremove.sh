#!/bin/sh
# halapi package: stop the service before its files go (the data dir stays).
set -e
if [ -d /run/systemd/system ]; then
  systemctl stop halapi.service >/dev/null 2>&1 || true
  systemctl disable halapi.service >/dev/null 2>&1 || true
fi
exit 0
