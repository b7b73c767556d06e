#!/bin/bash
# The naive peer huddle is benchmarked against: the shell loop people write instead of an agent.
#
#   naive_peer.sh MIN MAX COUNT_FILE READY_FILE  DIR BRANCH START  [DIR BRANCH START]...
#
# One loop for all apps: for each clone, `git fetch && git reset --hard origin/BRANCH`, and when
# HEAD moved, kill the app's process group and start START (in its own session, cwd DIR).
# Then sleep a random MIN..MAX seconds (integers, tenth-of-a-second jitter) and go again.
# No health checks, no rollback, no timeouts: exactly the loop, nothing more.
# SIGUSR1 writes the number of polls (fetch+reset per app) so far to COUNT_FILE; READY_FILE is
# created after the first round (all apps started). SIGTERM stops the apps and exits.
set -u
min=$1 max=$2 count_file=$3 ready_file=$4
shift 4
dirs=() branches=() starts=() heads=() pids=()
while [ $# -ge 3 ]; do
    dirs+=("$1") branches+=("$2") starts+=("$3") heads+=("") pids+=("")
    shift 3
done
polls=0

write_count() { echo "$polls" > "$count_file.tmp" && mv "$count_file.tmp" "$count_file"; }
sleeper=""
stop_all() {
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    for pid in "${pids[@]}"; do
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
    done
    wait
    write_count
    exit 0
}
trap write_count USR1
trap stop_all TERM INT

start_app() {  # $1 = index; the subshell's pid becomes the session and group leader
    ( cd "${dirs[$1]}" && eval "exec setsid ${starts[$1]}" ) >> "${dirs[$1]}.log" 2>&1 &
    pids[$1]=$!
}

while true; do
    for i in "${!dirs[@]}"; do
        cd "${dirs[$i]}" || continue
        if git fetch -q origin "${branches[$i]}" && git reset -q --hard "origin/${branches[$i]}"; then
            head=$(git rev-parse HEAD)
            if [ "$head" != "${heads[$i]}" ]; then
                if [ -n "${pids[$i]}" ]; then
                    kill -TERM -- "-${pids[$i]}" 2>/dev/null
                    wait "${pids[$i]}" 2>/dev/null
                fi
                start_app "$i"
                heads[$i]=$head
            fi
        fi
        polls=$((polls + 1))
    done
    [ -e "$ready_file" ] || : > "$ready_file"
    lo=$((min * 10)) hi=$((max * 10))
    t=$((lo + RANDOM % (hi - lo + 1)))
    sleep "$((t / 10)).$((t % 10))" &
    sleeper=$!
    # a trap runs at once during `wait` (not only after the sleep); then keep sleeping
    while kill -0 "$sleeper" 2>/dev/null; do wait "$sleeper"; done
done
