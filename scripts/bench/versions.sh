#!/bin/bash
# Record the machine and exact tool versions (stdout). usage: versions.sh MAMORI_BINARY
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
M=${1:-$ROOT/target/release/mamori}
echo "date: $(date -u +%FT%TZ)"
uname -srm
grep PRETTY /etc/os-release
echo "cpus: $(nproc)"
free -m | sed -n 2p
echo "repo HEAD at run time: $(git -C "$ROOT" rev-parse --short HEAD)"
echo "mamori working tree vs HEAD (src/): $(git -C "$ROOT" status --porcelain -- src | wc -l) changed files $(git -C "$ROOT" diff --stat HEAD -- src | tail -1)"
echo "mamori binary: $M sha256 $(sha256sum "$M" | cut -c1-16) mtime $(date -u -r "$M" +%FT%TZ) size $(stat -c %s "$M")"
echo "mamori --version: $("$M" --version)"
echo "hot-function order: $(python3 "$ROOT/scripts/bench/hot_functions.py" check "$M" 2>&1)"
echo "rustc: $(rustc --version 2>/dev/null)"
echo "supervisord --version: $(supervisord --version 2>/dev/null || echo missing)"
echo "monit -V: $(monit -V 2>/dev/null | head -1 || echo missing)"
if [ -f "$(npm root -g 2>/dev/null)/pm2/package.json" ]; then
  echo "pm2: $(node -p "require('$(npm root -g 2>/dev/null)/pm2/package.json').version") (read from package.json; \`pm2 -v\` also spawns a daemon) (node $(node -v))"
else
  echo "pm2: missing (node $(node -v 2>/dev/null))"
fi
echo "python3 (hog, supervisord): $(/usr/bin/python3 --version)"
echo "python3 (scripts): $(python3 --version)"
dpkg-query -W supervisor monit nodejs 2>/dev/null
