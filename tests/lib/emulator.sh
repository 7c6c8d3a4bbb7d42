# Emulators for the test and bench scripts, started in the calling shell so that their pids
# are known and every one is stopped. Source it from the repository root:
#
#   . tests/lib/emulator.sh
#   trap emulator_stop_all EXIT           # or call emulator_stop_all from your own EXIT trap
#   emulator_start url --identities 2     # $url is now http://127.0.0.1:PORT
#   emulator_stop url                     # optional: stop one before the end
#
# EMULATOR overrides the binary (default: $CARGO_TARGET_DIR or target, /release/imds-emulator).
# The emulator prints its URL as the first line of stdout (further lines, such as a TLS
# thumbprint, are in "$(emulator_output VAR)"); its output goes to a temporary folder that
# emulator_stop_all removes. Needs bash 4.

EMULATOR=${EMULATOR:-${CARGO_TARGET_DIR:-target}/release/imds-emulator}
declare -A _emulator_pids=()
_emulator_dir=

# emulator_start VAR [ARG...]: runs "$EMULATOR" ARG... in the background, waits (up to 10 s)
# for its URL and stores it in VAR. Fails, with the emulator's stderr, if the emulator exits
# first, prints nothing, or prints a URL that is not on loopback; VAR is then left as it was.
# Where set -e does not apply (a function called before `||`), check: `emulator_start … || return 1`.
emulator_start() {
    local var=$1
    shift
    [ -x "$EMULATOR" ] || {
        echo "emulator: $EMULATOR is missing (cargo build --release -p imds-emulator)" >&2
        return 1
    }
    [ -n "$_emulator_dir" ] || _emulator_dir=$(mktemp -d)
    local out=$_emulator_dir/$var.out err=$_emulator_dir/$var.err
    "$EMULATOR" "$@" >"$out" 2>"$err" &
    local pid=$!
    _emulator_pids[$var]=$pid
    local _
    for _ in $(seq 200); do
        # A whole first line (newline included), or the emulator is gone.
        [ "$(wc -l <"$out")" -ge 1 ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    # Not `url`: a local of that name would hide the caller's variable from `printf -v`.
    local first
    first=$(head -n 1 "$out")
    case "$first" in
        http://127.0.0.1:* | http://localhost:* | "http://[::1]:"* | https://127.0.0.1:*) ;;
        *)
            echo "emulator: $var (imds-emulator $*) did not start; its stderr:" >&2
            cat "$err" >&2
            emulator_stop "$var"
            return 1
            ;;
    esac
    printf -v "$var" '%s' "$first"
}

# emulator_output VAR: the file that holds the emulator's stdout.
emulator_output() {
    echo "$_emulator_dir/$1.out"
}

# emulator_stop VAR: stops the emulator started as VAR (SIGTERM; SIGKILL after 5 s) and reaps it.
emulator_stop() {
    local var=$1 pid=${_emulator_pids[$1]:-}
    [ -n "$pid" ] || return 0
    unset "_emulator_pids[$var]"
    kill "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# emulator_stop_all: stops every emulator still running and removes their output.
emulator_stop_all() {
    local var
    for var in "${!_emulator_pids[@]}"; do emulator_stop "$var"; done
    [ -z "$_emulator_dir" ] || rm -rf "$_emulator_dir"
    _emulator_dir=
}
