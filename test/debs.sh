#!/usr/bin/env bash
# Installs the Debian packages the tests drive that this machine lacks (make test-debs, run by make test):
# redis-server and redis-cli (single Redis and Redis Cluster), chromium (the console's browser tests),
# prometheus and promtool (the Prometheus source's tests). As root with apt-get it installs them, after
# apt-get update; elsewhere it stops at once, printing the one command to run.
set -euo pipefail

# command:package, one per command a test looks up on PATH.
wants=(redis-server:redis-server redis-cli:redis-tools chromium:chromium prometheus:prometheus promtool:prometheus)
need=()
for w in "${wants[@]}"; do
  cmd=${w%%:*} pkg=${w#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ " ${need[*]} " != *" $pkg "* ]]; then
    need+=("$pkg")
  fi
done
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test-debs: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  exit 0
fi
echo "test-debs: the tests need the Debian packages ${need[*]}; run:" >&2
echo "  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "(no apt-get here: install what provides redis-server, redis-cli, chromium, prometheus and promtool)" >&2
fi
exit 1
