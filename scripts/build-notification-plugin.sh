#!/bin/sh
# Builds CrowdSec's own notification plugin cmd/notification-TYPE, unmodified,
# from the crowdsec module VERSION fetched through the Go module proxy, into
# OUTDIR/notification-TYPE. The module cache is read-only, so the module is
# copied to a temporary directory and built there as the main module (with
# its own go.mod and go.sum: the versions CrowdSec ships).
# Usage: scripts/build-notification-plugin.sh VERSION TYPE OUTDIR
set -eu
version=$1 typ=$2 out=$3
GO=${GO:-go}
dir=$($GO mod download -json "github.com/crowdsecurity/crowdsec@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -d "$dir/cmd/notification-$typ" ] || { echo "crowdsec $version: no cmd/notification-$typ" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
cp -R "$dir" "$tmp/crowdsec"
chmod -R u+w "$tmp/crowdsec"
mkdir -p "$out"
# the package must belong to the main module (no nested go.mod)
[ ! -e "$tmp/crowdsec/cmd/notification-$typ/go.mod" ] || { echo "cmd/notification-$typ is its own module" >&2; exit 1; }
(cd "$tmp/crowdsec" && CGO_ENABLED=0 $GO build -trimpath -o "$out/notification-$typ.tmp" "./cmd/notification-$typ")
chmod 0755 "$out/notification-$typ.tmp"
mv "$out/notification-$typ.tmp" "$out/notification-$typ"
echo "built $out/notification-$typ (crowdsec $version)"
