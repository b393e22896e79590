#!/usr/bin/env bash
# Compression over a real-ish link: two network namespaces joined by a
# veth pair with a token-bucket rate limit on the sender's side, made here
# and removed at exit (root needed), against unlimited loopback.
#
#   scripts/bench-network.sh                   # release build, 1 GiB, 1gbit, 3 rounds
#   REPS=1 SIZE=256M RATE=1gbit scripts/bench-network.sh
#   TRANSIT=/path/to/transit scripts/bench-network.sh     # no cargo build
#
# Test bed: namespaces tnA (sender, 10.77.0.1) and tnB (receiver,
# 10.77.0.2), veth vA <-> vB, `tc -n tnA qdisc add dev vA root tbf rate RATE
# burst 1mb latency 50ms`. Nothing outside these namespaces is a target.
#
# Cases, rounds interleaved, whole commands timed from outside (the
# receiver listens first, not timed; the clock runs from the sender's start
# until both exited): a SIZE file of compressible text in tmpfs (made once
# by transit send file:F --ram SIZE --compressible --zero-ratio 0) sent with
# --input into the receiver's memory, 4 channels, with --compress none |
# zstd | auto, over the link and over loopback (no limit).
#
# Delta (recv --delta), over the link, rounds interleaved with the above:
# a SIZE file of random bytes in tmpfs (DELTA_DIR, default /dev/shm) and an
# older copy with 1% of its 4 KiB pages changed at random places;
#   full    the file to a receiver whose --output does not exist
#   delta   the same to a receiver whose --output holds the older copy
#           (copied there before the clock starts), with --delta
#   inplace the same as delta with --delta --inplace (the older copy is
#           updated where it lies under an undo journal, not copied)
# every output compared with the file (cmp) every round.
#
# Lost channel (send/recv --reconnect), over the link, rounds interleaved:
#   lost    the same random file as `full` (to a new --output), one page
#           connection killed with `ss -K` in the sender's namespace 1 s
#           after the start; both ends must report a reconnect and the
#           output must equal the file. The bytes that left the sender's
#           namespace (vA TX) are recorded too.
# And on loopback `loop-noack`: as loop-none, with --reconnect 0 on both
# ends (no acknowledgements kept or read): what reconnection costs.
#
# Targets (issue 16), from the medians:
#   link:     none / zstd >= 2.5 (zstd at least 2.5x faster)
#   link:     auto within 10% of the better of none and zstd
#   loopback: auto within 10% of the better of none and zstd
#   link:     delta / full <= 0.1
#   link:     inplace / full <= 0.1
#   link:     lost / full <= 1.25, and its vA TX bytes / file <= 1.1
#   loopback: none / noack <= 1.05 (acknowledgements cost little)
#   link:     resume: the same SIZE file to `recv --resume`, the sender
#             killed (SIGKILL) after a random 0.5-3 s, again and again until
#             a run completes; the bytes that left the sender's namespace
#             over all runs (vA's TX counter: headers and handshakes
#             included) / the file's bytes <= 1.1, and the file identical
# The script prints each round, then medians, best and the ratios, and
# exits 1 if a target is missed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

REPS=${REPS:-3}
SIZE=${SIZE:-1G}
RATE=${RATE:-1gbit}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-network.sh makes network namespaces: run it as root" >&2
    exit 1
fi
need=()
command -v jq >/dev/null || need+=(jq)
command -v ip >/dev/null || need+=(iproute2)
command -v tc >/dev/null || need+=(iproute2)
command -v bc >/dev/null || need+=(bc)
install_missing "${need[@]}"

T=$(transit_binary)

work=$(mktemp -d)
cleanup() {
    ip netns del tnA 2>/dev/null || true
    ip netns del tnB 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cleanup
work=$(mktemp -d)

ip netns add tnA
ip netns add tnB
ip link add vA netns tnA type veth peer name vB netns tnB
ip -n tnA addr add 10.77.0.1/24 dev vA
ip -n tnB addr add 10.77.0.2/24 dev vB
ip -n tnA link set vA up
ip -n tnB link set vB up
ip -n tnA link set lo up
ip -n tnB link set lo up
tc -n tnA qdisc add dev vA root tbf rate "$RATE" burst 1mb latency 50ms

now() { date +%s.%N; }

# run_case NAME WHERE METHOD: WHERE is link or loop.
run_case() {
    local name=$1 where=$2 method=$3 addr t0 t1 rpid
    local rx=() tx=() listen=tcp:127.0.0.1:0 opt=()
    if [ "$method" = noack ]; then
        method=none
        opt=(--reconnect 0)
    fi
    if [ "$where" = link ]; then
        rx=(ip netns exec tnB)
        tx=(ip netns exec tnA)
        listen=tcp:10.77.0.2:0
    fi
    rm -f "$work/r.err" # wait_listen must not read the last receiver's address
    "${rx[@]}" "$T" recv "$listen" "${opt[@]}" --json >"$work/r.json" 2>"$work/r.err" &
    rpid=$!
    addr=$(wait_listen "$work/r.err")
    t0=$(now)
    "${tx[@]}" "$T" send "$addr" --input "$ddir/text.img" --channels 4 "${opt[@]}" \
        --compress "$method" --json >"$work/s.json" 2>"$work/s.err" || {
        cat "$work/s.err" >&2
        return 1
    }
    wait "$rpid"
    t1=$(now)
    if [ "$(jq -r .verified "$work/r.json")" != true ]; then
        echo "$name: not verified" >&2
        return 1
    fi
    local secs wire bytes
    secs=$(echo "$t1 - $t0" | bc -l)
    wire=$(jq .wire_bytes "$work/s.json")
    bytes=$(jq .bytes "$work/s.json")
    echo "$secs" >>"$work/$name"
    printf '  %-14s %7.3f s  wire %6.1f MiB for %6.1f MiB of data\n' "$name" "$secs" \
        "$(echo "$wire / 1048576" | bc -l)" "$(echo "$bytes / 1048576" | bc -l)"
}

# delta_case NAME: full, delta or inplace.
delta_case() {
    local name=$1 out="$ddir/out.img" addr t0 t1 rpid extra=()
    rm -f "$out"
    case $name in
    delta) extra=(--delta) ;;
    inplace) extra=(--delta --inplace) ;;
    esac
    if [ "$name" != full ]; then
        cp "$ddir/old.img" "$out"
    fi
    rm -f "$work/r.err" # wait_listen must not read the last receiver's address
    ip netns exec tnB "$T" recv tcp:10.77.0.2:0 --output "$out" "${extra[@]}" --json \
        >"$work/r.json" 2>"$work/r.err" &
    rpid=$!
    addr=$(wait_listen "$work/r.err")
    t0=$(now)
    ip netns exec tnA "$T" send "$addr" --input "$ddir/new.img" --channels 4 --json \
        >"$work/s.json" 2>"$work/s.err" || {
        cat "$work/s.err" >&2
        return 1
    }
    wait "$rpid"
    t1=$(now)
    cmp -s "$ddir/new.img" "$out" || {
        echo "DELTA $name: the output differs from the input" >&2
        return 1
    }
    local secs
    secs=$(echo "$t1 - $t0" | bc -l)
    echo "$secs" >>"$work/link-$name"
    printf '  %-14s %7.3f s  data %7.1f MiB sent, %d pages kept\n' "link-$name" "$secs" \
        "$(echo "$(jq .bytes "$work/s.json") / 1048576" | bc -l)" "$(jq '.kept_pages // 0' "$work/s.json")"
    rm -f "$out"
}

# lost_case: the random file over the link, one page connection killed.
lost_case() {
    local out="$ddir/lost.img" addr port t0 t1 rpid spid tx0 tx1 sport conns
    rm -f "$out"
    rm -f "$work/r.err" # wait_listen must not read the last receiver's address
    ip netns exec tnB "$T" recv tcp:10.77.0.2:0 --output "$out" --json \
        >"$work/r.json" 2>"$work/r.err" &
    rpid=$!
    addr=$(wait_listen "$work/r.err")
    port=${addr##*:}
    tx0=$(ip -n tnA -s -j link show vA | jq '.[0].stats64.tx.bytes')
    t0=$(now)
    ip netns exec tnA "$T" send "$addr" --input "$ddir/new.img" --channels 4 --json \
        >"$work/s.json" 2>"$work/s.err" &
    spid=$!
    sleep 1
    # A page connection: the one with the most bytes queued to send (the
    # main channel has next to nothing queued while pages flow).
    conns=$(ip netns exec tnA ss -tnH state established "( dport = :$port )")
    sport=$(echo "$conns" | sort -k2,2nr | head -1 | awk '{print $3}' | sed 's/.*://')
    [ -n "$sport" ] || { echo "lost: no page connection to kill" >&2; return 1; }
    ip netns exec tnA ss -K state established "( dport = :$port and sport = :$sport )" >/dev/null 2>&1
    wait "$spid" || { cat "$work/s.err" >&2; return 1; }
    wait "$rpid" || { cat "$work/r.err" >&2; return 1; }
    t1=$(now)
    tx1=$(ip -n tnA -s -j link show vA | jq '.[0].stats64.tx.bytes')
    cmp -s "$ddir/new.img" "$out" || {
        echo "LOST: the output differs from the input" >&2
        return 1
    }
    local sr rr secs
    sr=$(jq '.reconnects // 0' "$work/s.json")
    rr=$(jq '.reconnects // 0' "$work/r.json")
    if [ "$sr" -lt 1 ] || [ "$rr" -lt 1 ]; then
        echo "LOST: no reconnect reported (send $sr, recv $rr)" >&2
        return 1
    fi
    secs=$(echo "$t1 - $t0" | bc -l)
    echo "$secs" >>"$work/link-lost"
    echo "$(echo "($tx1 - $tx0) / $(stat -c %s "$ddir/new.img")" | bc -l)" >>"$work/lost-tx"
    printf '  %-14s %7.3f s  %d reconnect(s), %.1f MiB left the sender\n' "link-lost" "$secs" \
        "$sr" "$(echo "($tx1 - $tx0) / 1048576" | bc -l)"
    rm -f "$out"
}

DELTA_DIR=${DELTA_DIR:-/dev/shm}
ddir=$(mktemp -d -p "$DELTA_DIR")
trap 'cleanup; rm -rf "$ddir"' EXIT
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$ddir/new.img"
"$T" send "file:$ddir/text.img" --ram "$SIZE" --compressible --zero-ratio 0 -q
cp "$ddir/new.img" "$ddir/old.img"
python3 - "$ddir/old.img" <<'PY'
import os, random, sys
path = sys.argv[1]
pages = os.path.getsize(path) // 4096
random.seed(16)
with open(path, "r+b") as f:
    for p in random.sample(range(pages), pages // 100):
        f.seek(p * 4096)
        f.write(os.urandom(4096))
PY

echo "compressible $SIZE image, 4 channels, link: veth + tbf $RATE (namespaces tnA -> tnB); loopback: no limit; $REPS rounds"
echo "delta: a $SIZE file, the receiver's copy with 1% of its pages changed"
cases=(link-none link-zstd link-auto loop-none loop-zstd loop-auto loop-noack)
for r in $(seq 1 "$REPS"); do
    echo "round $r"
    for c in "${cases[@]}"; do
        run_case "$c" "${c%%-*}" "${c#*-}"
    done
    delta_case full
    delta_case delta
    delta_case inplace
    lost_case
done
cases+=(link-full link-delta link-inplace link-lost)

# The resume case, once after the rounds.
resume_case() {
    local out="$ddir/resumed.img" tx0 tx1 runs=0 addr rpid spid done=0
    rm -f "$out" "$ddir/.resumed.img.transit-partial"
    tx0=$(ip -n tnA -s -j link show vA | jq '.[0].stats64.tx.bytes')
    RANDOM=7
    while [ "$done" = 0 ]; do
        runs=$((runs + 1))
        rm -f "$work/r.err" # wait_listen must not read the last receiver's address
        ip netns exec tnB "$T" recv tcp:10.77.0.2:0 --output "$out" --resume --json \
            >"$work/r.json" 2>"$work/r.err" &
        rpid=$!
        addr=$(wait_listen "$work/r.err")
        ip netns exec tnA "$T" send "$addr" --input "$ddir/new.img" --channels 4 \
            >/dev/null 2>&1 &
        spid=$!
        local wait_ms=$((500 + RANDOM % 2500))
        for _ in $(seq 1 $((wait_ms / 50))); do
            kill -0 "$spid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$spid" 2>/dev/null; then
            kill -9 "$spid"
            printf '  resume run %d: sender killed after %d ms\n' "$runs" "$wait_ms"
        fi
        wait "$spid" 2>/dev/null || true
        if wait "$rpid"; then
            done=1
        fi
        [ "$runs" -lt 30 ] || { echo "resume: no success in 30 runs" >&2; return 1; }
    done
    tx1=$(ip -n tnA -s -j link show vA | jq '.[0].stats64.tx.bytes')
    cmp -s "$ddir/new.img" "$out" || {
        echo "RESUME: the output differs from the input" >&2
        return 1
    }
    resume_ratio=$(echo "($tx1 - $tx0) / $(stat -c %s "$ddir/new.img")" | bc -l)
    printf '  resume: %d runs, %.1f MiB left the sender for a %.1f MiB file\n' "$runs" \
        "$(echo "($tx1 - $tx0) / 1048576" | bc -l)" "$(echo "$(stat -c %s "$ddir/new.img") / 1048576" | bc -l)"
    rm -f "$out"
}
echo "resume (once)"
resume_case

echo
printf '%-12s %10s %10s\n' case "median s" "best s"
declare -A med
for c in "${cases[@]}"; do
    mapfile -t v <"$work/$c"
    med[$c]=$(median "${v[@]}")
    b=$(printf '%s\n' "${v[@]}" | sort -g | head -1)
    printf '%-12s %10.3f %10.3f\n' "$c" "${med[$c]}" "$b"
done

fail=0
check() { # label value op target
    local ok
    ok=$(awk -v v="$2" -v t="$4" -v op="$3" 'BEGIN { print (op == ">=" ? v >= t : v <= t) ? "PASS" : "FAIL" }')
    [ "$ok" = PASS ] || fail=1
    printf '%-52s %7.3f  (target %s %s) %s\n' "$1" "$2" "$3" "$4" "$ok"
}
echo
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'; }
check "link: none / zstd (speed-up of zstd)" "$(echo "${med[link-none]} / ${med[link-zstd]}" | bc -l)" ">=" 2.5
check "link: auto / better of none and zstd" \
    "$(echo "${med[link-auto]} / $(min "${med[link-none]}" "${med[link-zstd]}")" | bc -l)" "<=" 1.10
check "loopback: auto / better of none and zstd" \
    "$(echo "${med[loop-auto]} / $(min "${med[loop-none]}" "${med[loop-zstd]}")" | bc -l)" "<=" 1.10
check "link: delta (1% changed) / full send" "$(echo "${med[link-delta]} / ${med[link-full]}" | bc -l)" "<=" 0.10
check "link: delta in place (1% changed) / full send" "$(echo "${med[link-inplace]} / ${med[link-full]}" | bc -l)" "<=" 0.10
check "link: resume, bytes sent over all runs / file bytes" "$resume_ratio" "<=" 1.10
mapfile -t v <"$work/lost-tx"
check "link: lost channel / full send (time)" "$(echo "${med[link-lost]} / ${med[link-full]}" | bc -l)" "<=" 1.25
check "link: lost channel, bytes sent / file bytes" "$(median "${v[@]}")" "<=" 1.10
check "loopback: none / noack (cost of reconnection)" "$(echo "${med[loop-none]} / ${med[loop-noack]}" | bc -l)" "<=" 1.05
exit "$fail"
