#!/usr/bin/env bash
# Measure `send --max-bandwidth` on loopback TCP: how close a capped
# transfer gets to its cap, and how evenly it flows.
#
#   scripts/bench-bandwidth.sh                  # release build, 1 GiB, 200 MB/s, 3 rounds
#   REPS=1 SIZE=256M CAP=100 scripts/bench-bandwidth.sh
#   TRANSIT=/path/to/transit scripts/bench-bandwidth.sh   # no cargo build
#
# Each round, for 1 and 4 channels (rounds interleaved): a SIZE image of
# random bytes (generated, --ram, --zero-ratio 0) sent to a receiver that
# keeps it in memory, with --max-bandwidth CAP MB/s (10^6 bytes, given as
# CAP*8 mbit). Reported per case:
#   rate/cap   the receiver's data-phase rate (bytes / seconds from its
#              --json summary: handshake and set-up left out, a component
#              figure, which is what the cap governs) over the cap;
#              target 0.95-1.05
#   peak/cap   the fastest 100 ms interval of the receiver's
#              --json-interval 0.1 objects (their data_bytes_per_second),
#              over the cap: how smooth the flow is (the
#              limiter allows a 25 ms burst, so up to about 1.25 in one
#              interval is within its contract; an even flow stays near 1)
#   whole      the sender's total_seconds (what a user waits for)
# The script exits 1 if a median rate/cap is outside 0.95-1.05.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

REPS=${REPS:-3}
SIZE=${SIZE:-1G}
CAP=${CAP:-200}

need=()
command -v jq >/dev/null || need+=(jq)
install_missing "${need[@]}"

T=$(transit_binary)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cap_bps=$((CAP * 1000000))

run_case() { # channels round
    local ch=$1 r=$2 addr
    rm -f "$work/r.err" # wait_listen must not read the last receiver's address
    "${RPIN[@]}" "$T" recv tcp:127.0.0.1:0 --json --json-interval 0.1 \
        >"$work/r.json" 2>"$work/r.err" &
    local rpid=$!
    addr=$(wait_listen "$work/r.err")
    "${SPIN[@]}" "$T" send "$addr" --ram "$SIZE" --zero-ratio 0 --channels "$ch" \
        --max-bandwidth "$((CAP * 8))mbit" --json >"$work/s.json" 2>"$work/s.err"
    wait "$rpid"
    local summary rate peak whole
    summary=$(jq -c 'select(.type == "summary")' "$work/r.json")
    rate=$(jq -n --argjson s "$summary" --argjson c "$cap_bps" '$s.bytes / $s.seconds / $c')
    peak=$(jq -s --argjson c "$cap_bps" \
        '[.[] | select(.type == "interval" and .interval_seconds > 0.05) | .data_bytes_per_second] | max / $c' \
        "$work/r.json")
    whole=$(jq .total_seconds "$work/s.json")
    printf '%s %s %s\n' "$rate" "$peak" "$whole" >>"$work/c$ch"
    printf 'round %d, %d channel(s): rate/cap %.3f, peak 100 ms/cap %.2f, whole %.2f s\n' \
        "$r" "$ch" "$rate" "$peak" "$whole"
}

echo "transit send --max-bandwidth $((CAP * 8))mbit ($CAP MB/s), $SIZE generated image, loopback TCP, $REPS rounds"
for r in $(seq 1 "$REPS"); do
    run_case 1 "$r"
    run_case 4 "$r"
done

fail=0
echo
printf '%-10s %14s %14s %14s\n' case "rate/cap med" "peak/cap max" "whole med (s)"
for ch in 1 4; do
    mapfile -t rates < <(cut -d' ' -f1 "$work/c$ch")
    mapfile -t peaks < <(cut -d' ' -f2 "$work/c$ch")
    mapfile -t wholes < <(cut -d' ' -f3 "$work/c$ch")
    m=$(median "${rates[@]}")
    p=$(best "${peaks[@]}")
    w=$(median "${wholes[@]}")
    verdict=$(awk -v m="$m" 'BEGIN { print (m >= 0.95 && m <= 1.05) ? "PASS" : "FAIL" }')
    [ "$verdict" = PASS ] || fail=1
    printf '%-10s %9.3f %4s %14.2f %14.2f\n' "$ch ch" "$m" "$verdict" "$p" "$w"
done
exit "$fail"
