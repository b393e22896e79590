#!/usr/bin/env bash
# Context, not targets: transit's data phase (generated images, --ram) side
# by side with iperf3 over loopback TCP, and the ratios. The targets of
# what users wait for (whole commands, files, RSS) are checked by
# scripts/bench-e2e.sh; the old iperf3 ratios below compared a transfer of
# real memory with iperf3 resending one cache-hot buffer, and are printed
# as context only (no PASS/MISS).
#
#   scripts/bench-vs-iperf3.sh            # release build, 3 repetitions
#   REPS=5 SIZE=1G scripts/bench-vs-iperf3.sh
#
# Printed (plain iperf3 resends one cache-hot 1 MiB buffer; the iperf3 -F
# row sends a file from tmpfs):
#   1. tcp, 1 channel, 1 GiB image without zero pages, two processes:
#      transit data rate / `iperf3 -l 1M` single stream (context)
#   2. 1 GiB image with 50% zero pages, 4 channels: image rate / iperf3
#      (context)
#   3. 4 channels / 1 channel (context)
#   4. limits still checked: peak RSS (/usr/bin/time -v) of each side <=
#      image size + 64 MiB; a stream from stdin (head -c 4G /dev/zero) <=
#      64 MiB on both sides
# Best of REPS runs for each rate (loopback numbers move from run to run).
# The runs are interleaved (iperf3, then each transit case, REPS rounds), so
# a slow spell of the machine hits both sides alike, and iperf3 moves the
# same number of bytes as transit (`-n SIZE`; IPERF_SECONDS=5 runs it for a
# time instead). The median of the per-round ratios is printed too, and
# the CPU seconds per GB of each side (iperf3 and transit) to show where
# the time goes.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-3}
# PIN=1: the receiving side runs on CPU 1 and the sending side on CPU 0
# (iperf3 too); see scripts/lib.sh, which also has the shared helpers.
. scripts/lib.sh
SIZE=${SIZE:-1G}
STREAM=${STREAM:-4G}
PACKET=${PACKET:-}          # e.g. PACKET=1M to try another packet size
IPERF_SECONDS=${IPERF_SECONDS:-}   # empty: iperf3 -n SIZE

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /usr/bin/time ] || need+=(time)
command -v jq >/dev/null || need+=(jq)
install_missing "${need[@]}"

T=$(transit_binary)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

size_bytes() { # 1G -> bytes
    local n=${1%[KMGkmg]} u=${1: -1}
    case $u in K|k) echo $((n << 10));; M|m) echo $((n << 20));; G|g) echo $((n << 30));; *) echo "$1";; esac
}

# iperf3 -l 1M, one stream, loopback.
iperf_rate() {
    local port=$((20000 + RANDOM % 20000))
    "${RPIN[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.3
    local amount=(-n "$SIZE")
    [ -n "$IPERF_SECONDS" ] && amount=(-t "$IPERF_SECONDS")
    "${SPIN[@]}" iperf3 -c 127.0.0.1 -p "$port" -l 1M "${amount[@]}" -J >"$work/iperf.json"
    wait "$srv" || true
    iperf_cpu "$work/iperf.json" >>"$work/iperf.cpu"
    jq '.end.sum_received.bits_per_second / 8 / 1e9' "$work/iperf.json"
}

# CPU seconds per GB of an iperf3 run (iperf3 -J: process CPU percent over
# the test), sender then receiver.
iperf_cpu() {
    jq -r '.end as $e | ($e.sum_received.bytes / 1e9) as $gb
        | "\($e.cpu_utilization_percent.host_total / 100 * $e.sum_sent.seconds / $gb) \($e.cpu_utilization_percent.remote_total / 100 * $e.sum_sent.seconds / $gb)"' "$1"
}

# Context, not a target: iperf3 sending a SIZE file from tmpfs (-F), so its
# sender reads the bytes from memory as transit's does from the image
# (plain iperf3 resends one cache-hot 1 MiB buffer).
iperf_file_rate() {
    local port=$((20000 + RANDOM % 20000))
    "${RPIN[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.3
    "${SPIN[@]}" iperf3 -c 127.0.0.1 -p "$port" -l 1M -F "$imgfile" -J >"$work/iperf-file.json"
    wait "$srv" || true
    iperf_cpu "$work/iperf-file.json" >>"$work/iperf-file.cpu"
    jq '.end.sum_received.bits_per_second / 8 / 1e9' "$work/iperf-file.json"
}

# One transit session: recv and send as two processes under /usr/bin/time.
# Args: tag, then send args. Writes $work/TAG.{send,recv}.{json,time}.
transit_run() {
    local tag=$1; shift
    local extra=()
    [ -n "$PACKET" ] && extra=(--packet-size "$PACKET")
    "${RPIN[@]}" /usr/bin/time -v "$T" recv tcp:127.0.0.1:0 --json >"$work/$tag.recv.json" \
        2>"$work/$tag.recv.err" &
    local rpid=$! addr
    addr=$(wait_listen "$work/$tag.recv.err") || { kill "$rpid"; exit 1; }
    "${SPIN[@]}" /usr/bin/time -v "$T" send "$addr" "$@" "${extra[@]}" --json >"$work/$tag.send.json" \
        2>"$work/$tag.send.err"
    wait "$rpid"
    echo "$(cpu_per_gb "$work/$tag.send.json") $(cpu_per_gb "$work/$tag.recv.json")" >>"$work/${tag%-*}.cpu"
}

rss_mib() { # time -v output -> MiB
    awk -F: '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$1"
}

echo "== $REPS rounds of: iperf3 -l 1M (${IPERF_SECONDS:+${IPERF_SECONDS}s}${IPERF_SECONDS:-$SIZE}), transit 1 ch 0% zero, 4 ch 50% zero, 1 ch 50% zero" >&2
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=$work
imgfile=$(mktemp "$shm/transit-bench-XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work" "$imgfile"' EXIT
head -c "$(size_bytes "$SIZE")" /dev/urandom >"$imgfile"
ip=() ipf=() c1z0=() c4z5=() c1z5=()
for i in $(seq "$REPS"); do
    ip+=("$(iperf_rate)")
    ipf+=("$(iperf_file_rate)")
    transit_run "c1z0-$i" --ram "$SIZE" --zero-ratio 0 --channels 1
    c1z0+=("$(jq '.data_bytes_per_second / 1e9' "$work/c1z0-$i.send.json")")
    transit_run "c4z5-$i" --ram "$SIZE" --zero-ratio 0.5 --channels 4
    c4z5+=("$(jq '.covered_bytes_per_second / 1e9' "$work/c4z5-$i.send.json")")
    transit_run "c1z5-$i" --ram "$SIZE" --zero-ratio 0.5 --channels 1
    c1z5+=("$(jq '.covered_bytes_per_second / 1e9' "$work/c1z5-$i.send.json")")
    printf 'round %d: iperf3 %.2f  iperf3 -F %.2f  1ch/0%% data %.2f  4ch/50%% image %.2f  1ch/50%% image %.2f GB/s\n' \
        "$i" "${ip[-1]}" "${ipf[-1]}" "${c1z0[-1]}" "${c4z5[-1]}" "${c1z5[-1]}" >&2
done
iperf=$(best "${ip[@]}")
iperf_file=$(best "${ipf[@]}")
one_data=$(best "${c1z0[@]}")
four_img=$(best "${c4z5[@]}")
one_img=$(best "${c1z5[@]}")
# Median over the rounds of (transit / iperf3 of the same round).
median_ratio() { # name of the transit array
    local -n arr=$1
    local i out=()
    for i in "${!arr[@]}"; do out+=("$(awk -v a="${arr[$i]}" -v b="${ip[$i]}" 'BEGIN {print a / b}')"); done
    printf %.2f "$(median "${out[@]}")"
}
m1=$(median_ratio c1z0)
m2=$(median_ratio c4z5)

echo "== transit stream from stdin: head -c $STREAM /dev/zero, 4 channels" >&2
"${RPIN[@]}" /usr/bin/time -v "$T" recv tcp:127.0.0.1:0 --json >"$work/stream.recv.json" 2>"$work/stream.recv.err" &
rpid=$!
addr=$(wait_listen "$work/stream.recv.err") || { kill "$rpid"; exit 1; }
head -c "$STREAM" /dev/zero | "${SPIN[@]}" /usr/bin/time -v "$T" send "$addr" --input - --json \
    >"$work/stream.send.json" 2>"$work/stream.send.err"
wait "$rpid"

img_mib=$(( $(size_bytes "$SIZE") >> 20 ))
limit=$((img_mib + 64))
rss_send=$(rss_mib "$work/c1z0-1.send.err")
rss_recv=$(rss_mib "$work/c1z0-1.recv.err")
rss_send4=$(rss_mib "$work/c4z5-1.send.err")
rss_recv4=$(rss_mib "$work/c4z5-1.recv.err")
st_send=$(rss_mib "$work/stream.send.err")
st_recv=$(rss_mib "$work/stream.recv.err")
st_rate=$(jq '.covered_bytes_per_second / 1e9' "$work/stream.send.json")

cpu_pair() { # name of a .cpu file -> "send / recv" medians
    printf '%.3f / %.3f\n' "$(median $(cut -d' ' -f1 "$work/$1.cpu"))" "$(median $(cut -d' ' -f2 "$work/$1.cpu"))"
}

verdict() { # cond -> PASS/MISS (the RSS limits); the iperf3 ratios are context
    if awk "BEGIN {exit !($1)}"; then echo PASS; else echo MISS; fi
}

r1=$(awk "BEGIN {printf \"%.2f\", $one_data / $iperf}")
r2=$(awk "BEGIN {printf \"%.2f\", $four_img / $iperf}")
r3=$(awk "BEGIN {printf \"%.2f\", $four_img / $one_img}")
cat <<REPORT

transit send/recv vs iperf3 over loopback TCP ($(nproc) cores, $(uname -r)), best of $REPS interleaved rounds, PIN=$PIN
packet payload: ${PACKET:-default}

iperf3 -l 1M, 1 stream (${IPERF_SECONDS:+${IPERF_SECONDS}s}${IPERF_SECONDS:-$SIZE}):    $(printf %.2f "$iperf") GB/s
1 channel, $SIZE, 0% zero: data rate            $(printf %.2f "$one_data") GB/s  = ${r1}x iperf3   median of rounds ${m1}x
4 channels, $SIZE, 50% zero: image rate         $(printf %.2f "$four_img") GB/s  = ${r2}x iperf3   median of rounds ${m2}x
1 channel, $SIZE, 50% zero: image rate          $(printf %.2f "$one_img") GB/s
context: iperf3 -l 1M -F (a $SIZE file in tmpfs): $(printf %.2f "$iperf_file") GB/s; transit 1 channel data rate = $(awk "BEGIN {printf \"%.2f\", $one_data / $iperf_file}")x that
4 channels / 1 channel (50% zero):              ${r3}x
peak RSS, 1 channel 0% zero: send / recv        $rss_send / $rss_recv MiB (limit $limit MiB)  $(verdict "$rss_send <= $limit && $rss_recv <= $limit")
peak RSS, 4 channels 50% zero: send / recv      $rss_send4 / $rss_recv4 MiB (limit $limit MiB)  $(verdict "$rss_send4 <= $limit && $rss_recv4 <= $limit")
stream $STREAM from stdin: send / recv RSS      $st_send / $st_recv MiB (limit 64 MiB)  $(verdict "$st_send <= 64 && $st_recv <= 64")
stream $STREAM from stdin: rate                 $(printf %.2f "$st_rate") GB/s

CPU seconds per GB, send / recv, median of $REPS rounds (iperf3: process CPU
from its JSON; transit: its channel threads' own clocks; a side near
1 s per second of transfer is the bottleneck):
  iperf3 -l 1M                                  $(cpu_pair iperf)
  iperf3 -l 1M -F (tmpfs file)                  $(cpu_pair iperf-file)
  transit 1 channel, 0% zero                    $(cpu_pair c1z0)
  transit 4 channels, 50% zero                  $(cpu_pair c4z5)
REPORT
