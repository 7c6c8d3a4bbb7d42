#!/usr/bin/env bash
# Runs a command in a session of its own and fails if any process it started outlives it.
# Usage: tests/lib/no_leftovers.sh CMD [ARG...]   (`make test` runs its steps this way)
#
# A process counts as started by CMD when it is in CMD's session, or when its environment
# carries this run's IMDS_CACHE_RUN_ID (which catches a child that called setsid itself).
# Nothing else on the machine is looked at: other builds, editors and daemons are in other
# sessions and carry no such id. Leftovers get up to 5 s to exit (a process stopped with
# SIGTERM may still be on its way out), then they are listed, stopped by pid, and the exit
# status is 1 (or CMD's own status if CMD failed).
#   LEFTOVER_OK='NAME…'   process names that may outlive the run (default: sccache, whose
#                         server outlives the builds that start it on purpose)
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: $0 CMD [ARG...]" >&2; exit 2; }
LEFTOVER_OK=${LEFTOVER_OK:-sccache}

run_id=imds-cache-run-$(cat /proc/sys/kernel/random/uuid)
sid_file=$(mktemp)
trap 'rm -f "$sid_file"' EXIT

session_pids() {
    local sid=$1
    ps -e -o pid=,sid=,stat= | awk -v sid="$sid" '$2 == sid && $3 !~ /^Z/ { print $1 }'
}

# The session has no terminal, so Ctrl-C reaches only this script: pass it on to the session
# (to the runner alone if it has not said its session yet).
runner=
forward() {
    local sid
    sid=$(cat "$sid_file")
    if [ -n "$sid" ]; then
        # shellcheck disable=SC2046
        kill -"$1" $(session_pids "$sid") 2>/dev/null
    elif [ -n "$runner" ]; then
        kill -"$1" "$runner" 2>/dev/null
    fi
}
trap 'forward INT' INT
trap 'forward TERM' TERM

# The runner makes a session, writes its pid (the session's id) and becomes CMD. Python, not
# setsid(1): a job started with `&` inherits SIGINT and SIGQUIT ignored, which a shell cannot
# undo and which would change what the tests see (Python installs no KeyboardInterrupt
# handler when SIGINT starts ignored). SIGPIPE and SIGXFSZ are reset too (Python ignores
# them). Stdin stays this script's.
IMDS_CACHE_RUN_ID=$run_id python3 -c '
import os, signal, sys
for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(s, signal.SIG_DFL)
os.setsid()
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])
' "$sid_file" "$@" <&0 &
runner=$!

status=0
wait "$runner" || status=$?
# A signal interrupts `wait`; wait again until the runner is really gone.
while kill -0 "$runner" 2>/dev/null; do wait "$runner" || status=$?; done
trap - INT TERM
sid=$(cat "$sid_file")

# Pids in the session, or with this run's id in their environment (same user only: others'
# environments are unreadable, and they cannot have inherited it anyway).
leftovers() {
    {
        [ -z "$sid" ] || session_pids "$sid"
        grep -lsF "IMDS_CACHE_RUN_ID=$run_id" /proc/[0-9]*/environ 2>/dev/null |
            sed -n 's|^/proc/\([0-9]*\)/environ$|\1|p'
    } | sort -un | while read -r pid; do
        [ "$pid" != $$ ] || continue
        state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || continue
        [ "$state" != Z ] || continue
        name=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
        case " $LEFTOVER_OK " in *" $name "*) continue ;; esac
        echo "$pid"
    done
}

for _ in $(seq 50); do
    left=$(leftovers)
    [ -n "$left" ] || break
    sleep 0.1
done
if [ -n "$left" ]; then
    echo "no_leftovers: these processes started by '$*' were still running at its end:" >&2
    # shellcheck disable=SC2086
    ps -o pid,ppid,sid,etime,args -p "$(echo $left | tr ' ' ,)" >&2 || true
    # shellcheck disable=SC2086
    kill $left 2>/dev/null || true
    sleep 1
    # shellcheck disable=SC2086
    kill -KILL $(leftovers) 2>/dev/null || true
    echo "no_leftovers: stopped them; a test must stop every process it starts" >&2
    [ "$status" -ne 0 ] || status=1
fi
exit "$status"
