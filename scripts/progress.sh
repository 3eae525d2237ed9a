#!/usr/bin/env bash
# Progress for a long install: "step k of n", what it does, the time spent and an estimate of what
# is left, from durations known beforehand (measured on 2 cores) and refined by the durations this
# machine recorded the last time (~/.cache/sentinel/install-times). While a step runs a line is
# printed every SENTINEL_PROGRESS_INTERVAL seconds (30 by default): plain lines, no cursor tricks,
# so a CI log without a terminal (CI=true, no stdin) reads the same as a terminal.
# A step may name a log file to read a build's own progress from: the last "[ 42%]" (make) or
# "[120/340]" (ninja) in it is shown beside the time.
#
# Usage (sourced):  progress_plan "name:seconds" ...;  progress_step NAME [--log FILE] -- COMMAND ...
# Step names are words (letters, digits, -), the estimates whole seconds.

PROGRESS_INTERVAL="${SENTINEL_PROGRESS_INTERVAL:-30}"
PROGRESS_TIMES="${SENTINEL_PROGRESS_TIMES:-${XDG_CACHE_HOME:-$HOME/.cache}/sentinel/install-times}"
PROGRESS_NAMES=()
declare -A PROGRESS_ESTIMATE=()
PROGRESS_DONE=0
PROGRESS_START=$SECONDS

_fmt() { local s=$1; if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi; }

_recorded() { if [ -f "$PROGRESS_TIMES" ]; then awk -v n="$1" '$1 == n {t = $2} END {if (t != "") print t}' "$PROGRESS_TIMES"; fi; }

# progress_plan "system-packages:60" "llama:480" ...: the steps in order, each with its usual duration.
progress_plan() {
    local entry name
    for entry in "$@"; do
        name="${entry%%:*}"
        PROGRESS_NAMES+=("$name")
        PROGRESS_ESTIMATE[$name]="$(_recorded "$name")"
        [ -n "${PROGRESS_ESTIMATE[$name]}" ] || PROGRESS_ESTIMATE[$name]="${entry##*:}"
    done
}

# What is left after `elapsed` seconds of step number `index` (0-based): its own rest, then the later steps'.
_left() {
    local index=$1 elapsed=$2 own i total=0
    own=${PROGRESS_ESTIMATE[${PROGRESS_NAMES[$index]}]}
    [ "$elapsed" -lt "$own" ] && total=$((own - elapsed))
    for ((i = index + 1; i < ${#PROGRESS_NAMES[@]}; i++)); do total=$((total + PROGRESS_ESTIMATE[${PROGRESS_NAMES[$i]}])); done
    echo "$total"
}

_build_progress() {
    [ -n "$1" ] && [ -f "$1" ] || return 0
    grep -aoE '\[ *[0-9]{1,3}%\]|\[[0-9]+/[0-9]+\]' "$1" | tail -n 1 | awk -F'[][/% ]+' '
        /%/ {print "build " $2 "%"; next}
        {if ($3 > 0) printf "build %d%% (%d of %d)\n", 100 * $2 / $3, $2, $3}'
}

# progress_step NAME DESCRIPTION [--log FILE | --interactive] -- COMMAND...: run one planned step,
# reporting as it goes. --interactive runs it in the foreground, keeping the terminal's stdin (sudo
# may ask for a password; a background job's stdin is /dev/null), without the running lines.
progress_step() {
    local name=$1 what=$2 log="" interactive="" index=$PROGRESS_DONE n=${#PROGRESS_NAMES[@]} started=$SECONDS status elapsed
    shift 2
    if [ "${1:-}" = "--log" ]; then log=$2; shift 2; fi
    if [ "${1:-}" = "--interactive" ]; then interactive=1; shift; fi
    [ "${1:-}" = "--" ] && shift
    echo "sentinel setup: step $((index + 1)) of $n: $what (usually about $(_fmt "${PROGRESS_ESTIMATE[$name]}"); about $(_fmt "$(_left "$index" 0)") left in all)"
    if [ -n "$interactive" ]; then
        "$@" && status=0 || status=$?
    else
        _run_reporting "$index" "$what" "$log" "$@" && status=0 || status=$?
    fi
    elapsed=$((SECONDS - started))
    if [ "$status" -ne 0 ]; then
        echo "sentinel setup: step $((index + 1)) of $n failed after $(_fmt "$elapsed"): $what" >&2
        [ -n "$log" ] && [ -f "$log" ] && { echo "--- the last lines of $log:" >&2; tail -n 40 "$log" >&2; }
        return "$status"
    fi
    PROGRESS_DONE=$((index + 1))
    _record "$name" "$elapsed"
    echo "sentinel setup: step $((index + 1)) of $n done in $(_fmt "$elapsed"): $what (total $(_fmt $((SECONDS - PROGRESS_START))))"
}

# Run the command in the background, printing a line every interval until it exits; its status.
_run_reporting() {
    local index=$1 what=$2 log=$3 started=$SECONDS pid elapsed extra
    shift 3
    "$@" </dev/null &
    pid=$!
    while ! _wait_for "$pid" "$PROGRESS_INTERVAL"; do
        elapsed=$((SECONDS - started))
        extra=$(_build_progress "$log")
        [ "$elapsed" -gt "${PROGRESS_ESTIMATE[${PROGRESS_NAMES[$index]}]}" ] && extra="${extra:+$extra, }longer than usual"
        echo "sentinel setup: step $((index + 1)) of ${#PROGRESS_NAMES[@]}: $what: $(_fmt "$elapsed")${extra:+, $extra}, about $(_fmt "$(_left "$index" "$elapsed")") left in all"
    done
    wait "$pid"
}

# True once pid has exited, false when `seconds` passed first (a fraction is fine).
_wait_for() {
    local pid=$1 deadline
    deadline=$(awk -v s="$2" 'BEGIN {printf "%d", s * 10}')
    while [ "$deadline" -gt 0 ]; do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
        deadline=$((deadline - 1))
    done
    ! kill -0 "$pid" 2>/dev/null
}

# A step's duration on this machine, for the next estimate (a step that found its work done, a
# cached wheel say, records its short time too: the next run will most likely find it done as well).
_record() {
    mkdir -p "$(dirname "$PROGRESS_TIMES")" 2>/dev/null || return 0
    { [ -f "$PROGRESS_TIMES" ] && grep -v "^$1 " "$PROGRESS_TIMES"; echo "$1 $2"; } >"$PROGRESS_TIMES.tmp" 2>/dev/null &&
        mv "$PROGRESS_TIMES.tmp" "$PROGRESS_TIMES" || true
}
