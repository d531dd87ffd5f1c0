#!/usr/bin/env bash
# Runs costd for `make run` (run.sh BINARY FLAGS...) so that it stops with make, however make is stopped:
# - On a terminal costd is the foreground job of its own (set -m): Ctrl-C reaches costd only, which stops
#   cleanly, and make exits with costd's status (0), not "Error 1" or "Interrupt".
# - A signal to make's process group (INT, TERM, HUP: what timeout, a supervisor or a script sends) or a
#   TERM to make reaches this script, which sends TERM to costd's process group and waits until costd
#   has stopped (its Redis child too), so nothing is left running with its ports.
# Not covered: SIGINT to make alone (make then only waits for its children) and SIGKILL.
set -u
pidfile=$(mktemp "${TMPDIR:-/tmp}/costd-run.XXXXXX")
trap 'rm -f "$pidfile"' EXIT
# The helper runs costd as a job (its process group is its pid) and brings it to the foreground of the
# terminal, if any; it reports costd's pid first.
PIDFILE=$pidfile bash -c 'set -m; "$@" & echo $! >"$PIDFILE"; fg %1 >/dev/null' costd-run "$@" &
helper=$!
stop() {
  local pgid=""
  # The helper writes the pid right after starting costd.
  for _ in $(seq 50); do
    pgid=$(cat "$pidfile" 2>/dev/null) && [[ -n $pgid ]] && break
    kill -0 "$helper" 2>/dev/null || return
    sleep 0.1
  done
  [[ -n $pgid ]] && kill -TERM -- "-$pgid" 2>/dev/null
}
trap stop INT TERM HUP
# wait returns early (status > 128) when a trapped signal arrives; wait again until the helper is gone.
while :; do
  wait "$helper"
  status=$?
  kill -0 "$helper" 2>/dev/null || break
done
exit "$status"
