#!/bin/sh
# halapi package: the service user and its data dir, then reload systemd.
set -e
if ! getent group halapi >/dev/null 2>&1; then
  groupadd --system halapi
fi
if ! getent passwd halapi >/dev/null 2>&1; then
  useradd --system --gid halapi --home-dir /var/lib/halapi --no-create-home --shell /usr/sbin/nologin halapi
fi
install -d -o halapi -g halapi -m 0700 /var/lib/halapi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
