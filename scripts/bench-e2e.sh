#!/usr/bin/env bash
# Measure what a user waits for: whole commands timed from outside, from
# the start of the sender until both commands have exited and the output
# file is in place, over loopback TCP (127.0.0.1), files in tmpfs.
#
#   scripts/bench-e2e.sh                      # release build, 5 rounds, 1 GiB
#   QUICK=1 scripts/bench-e2e.sh              # T1/T2 only, 64 MiB, 1 round
#   REPS=3 SIZE=512M SPARSE=16G scripts/bench-e2e.sh
#   TRANSIT=/path/to/transit scripts/bench-e2e.sh   # no cargo build
#
# Cases, each round (one SIZE file of random bytes, made once):
#   dd        dd if=IN of=OUT bs=1M, a local copy: the floor
#   socat     socat -u -b 1048576 TCP-LISTEN:PORT OPEN:OUT,creat,trunc, then
#             socat -u -b 1048576 FILE:IN TCP:127.0.0.1:PORT
#   iperf3    iperf3 -s -1 -F OUT, then iperf3 -c 127.0.0.1 -l 1M -F IN; its
#             output file is checked and reported as it is (complete or not)
#   transit1  transit recv tcp:127.0.0.1:0 --output OUT, then
#             transit send ADDR --input IN --channels 1
#   transit4  the same with --channels 4
#   T3        a SIZE image file, 50% zero pages (4 KiB, exactly one of each
#             pair of pages, which one from a seeded generator), receiver
#             without --output (memory), 4 channels
#   T4        a SPARSE sparse file holding SIZE of data in EXTENTS extents
#             spread evenly -> a file, 4 channels; then du of the output and
#             an exact comparison (below)
# and once after the rounds: a DENSE file of random bytes -> a file, 4
# channels (peak RSS; its output goes to DENSE_DIR, on disk, so that input
# and output together stay within the tmpfs budget).
#
# Each receiver is started first (not timed) and listens; the clock runs
# from the sender's start until both processes have exited and the output
# is in place; OUT is removed after each run (a fresh tmpfs file each
# time). The outputs are compared with the input (cmp) in every round; a
# difference is an error printed loudly, the case FAILs and the script
# exits 3 at the end. T4 is compared without reading the holes: the union
# of both files' data ranges (SEEK_DATA/SEEK_HOLE) is compared byte by
# byte, and outside it both files are holes, i.e. zero: exact, and reads
# about 2 x SIZE instead of 2 x SPARSE.
#
# Targets (medians over the rounds):
#   T1  transit 1 channel rate / socat rate >= 1.0
#   T2  transit 4 channels rate / socat rate >= 1.25
#   T3  T3 whole time <= 0.6 x transit 4 channels (T2) time
#   T4  T4 whole time <= 1.5 x T2 time, du of the output <= 1.1 x SIZE,
#       output identical
#   T5  peak RSS (/usr/bin/time -v) of each side <= 256 MiB for T1, T2, T4
#       and the DENSE case
#   T6  the --json summary's total_seconds within 5% of the time measured
#       outside (sender's summary; "total_seconds: missing" without it)
# PASS/FAIL per target; the exit status is 0 when targets fail (this is a
# measurement), 3 when an output differed from its input, other non-zero
# when the script itself broke.
#
# Safety: every command runs under `timeout CASE_TIMEOUT` and with its
# private memory limited (prlimit --data=MEMLIMIT: heap and anonymous
# mappings; shared file mappings such as transit's mapped output are not
# counted, so a 64 GiB output mapping is allowed, but anonymous memory
# cannot run away). The files live in a tmpfs this script mounts with
# size=TMPFS_SIZE, so a receiver (or a sender reading holes through a
# mapping) that populates a whole SPARSE file fills that tmpfs and fails
# instead of taking the machine's RAM. A case that fails (exit status,
# timeout, missing or wrong output) is recorded as FAIL with the reason and
# not run again in later rounds; the other cases go on. Without root (no
# mount) the files go to /dev/shm and T4 is skipped.
#
# Knobs:
#   REPS=5          rounds (interleaved: every case in each round; each round
#                   starts one case later, so every case runs first in turn)
#   SIZE=1G         the file of T1/T2, T3's image, T4's data
#   SPARSE=64G      T4's file size (SPARSE=0: skip T4)
#   EXTENTS=64      T4's data extents (SIZE / EXTENTS bytes each)
#   DENSE=4G        the dense RSS case (DENSE=0: skip it)
#   DENSE_DIR=/var/tmp   where the DENSE case's output is written
#   QUICK=1         only dd, socat, iperf3, transit 1 and 4 channels; SIZE
#                   defaults to 64M and REPS to 1 (a smoke test)
#   PIN=1           receivers on CPU 1, senders on CPU 0 (scripts/lib.sh)
#   CASE_TIMEOUT=120  seconds per command
#   MEMLIMIT=4G     private memory limit per command
#   TMPFS_SIZE=6G   the tmpfs' size limit
#   TRANSIT=path    the binary to use (otherwise cargo build --release)
set -euo pipefail
trap 'echo "bench-e2e.sh: line $LINENO: a command failed (status $?): the script broke" >&2' ERR
cd "$(dirname "$0")/.."

# PIN=1: the receiving side runs on CPU 1 and the sending side on CPU 0
# (see scripts/lib.sh, which also has the shared helpers).
. scripts/lib.sh
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    SIZE=${SIZE:-64M}
    REPS=${REPS:-1}
fi
REPS=${REPS:-5}
SIZE=${SIZE:-1G}
SPARSE=${SPARSE:-64G}
EXTENTS=${EXTENTS:-64}
DENSE=${DENSE:-4G}
DENSE_DIR=${DENSE_DIR:-/var/tmp}
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
MEMLIMIT=${MEMLIMIT:-4G}
TMPFS_SIZE=${TMPFS_SIZE:-6G}
RSS_LIMIT_MIB=256

need=()
command -v socat >/dev/null || need+=(socat)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v jq >/dev/null || need+=(jq)
[ -x /usr/bin/time ] || need+=(time)
command -v ss >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
install_missing "${need[@]}"

T=$(transit_binary)

size_bytes() { # 1G -> bytes (K, M, G, T: binary)
    local n=${1%[KMGTkmgt]} u=${1: -1}
    case $u in
        K|k) echo $((n << 10));; M|m) echo $((n << 20));;
        G|g) echo $((n << 30));; T|t) echo $((n << 40));; *) echo "$1";;
    esac
}
size_b=$(size_bytes "$SIZE")
sparse_b=$(size_bytes "$SPARSE")
dense_b=$(size_bytes "$DENSE")
tmpfs_b=$(size_bytes "$TMPFS_SIZE")
mem_b=$(size_bytes "$MEMLIMIT")
if [ "$QUICK" = 1 ]; then
    sparse_b=0
    dense_b=0
fi

# --- the tmpfs ---------------------------------------------------------
work=$(mktemp -d)
fs=$work/fs
mounted=0
dense_out=""
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    local j
    for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$mounted" = 1 ]; then umount "$fs" 2>/dev/null || umount -l "$fs" || true; fi
    rm -rf "$work" "${shm_dir:-}" ${dense_out:+"$dense_out"}
}
trap cleanup EXIT
mkdir "$fs"
if [ "$(id -u)" -eq 0 ] && mount -t tmpfs -o "size=$tmpfs_b,mode=0700" transit-bench "$fs"; then
    mounted=1
else
    shm_dir=$(mktemp -d /dev/shm/transit-e2e-XXXXXX)
    fs=$shm_dir
    if [ "$sparse_b" -gt 0 ]; then
        echo "warning: no tmpfs of our own (not root?): the files go to $fs, T4 is skipped" >&2
        sparse_b=0
    fi
fi
# What the rounds hold at once: IN, T3's image, T4's data, one output.
hold=$((size_b * 2))
[ "$QUICK" = 1 ] || hold=$((size_b * 4))
if [ "$mounted" = 1 ] && { [ "$hold" -gt "$tmpfs_b" ] || [ "$dense_b" -gt "$tmpfs_b" ]; }; then
    echo "TMPFS_SIZE=$TMPFS_SIZE is too small for SIZE=$SIZE (needs $((hold >> 20)) MiB) or DENSE=$DENSE" >&2
    exit 1
fi

# --- running and timing ------------------------------------------------
# Every command: pinned (PIN=1), bounded in time (timeout kills the whole
# process group, transit included) and in private memory, under
# /usr/bin/time -v (its report in a file of its own).
limits=(timeout -k 5 "$CASE_TIMEOUT" prlimit --data="$mem_b")
rside() { local t=$1; shift; "${RPIN[@]}" "${limits[@]}" /usr/bin/time -v -o "$t" "$@"; }
sside() { local t=$1; shift; "${SPIN[@]}" "${limits[@]}" /usr/bin/time -v -o "$t" "$@"; }

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f", b - a}'; }
rss_mib() { # time -v report -> MiB
    awk -F: '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$1" 2>/dev/null
}

# A free TCP port on 127.0.0.1.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        [ -z "$(ss -Hltn "sport = :$p")" ] && { echo "$p"; return; }
    done
}
# Wait up to 10 s for something to listen on port $1 while process $2 lives.
wait_port() {
    local _
    for _ in $(seq 1 200); do
        [ -n "$(ss -Hltn "sport = :$1")" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Why a run failed, from the exit status and the stderr file of one side.
why() { # side status errfile
    local s=$2 sig
    if [ "$s" = 124 ]; then
        echo "$1 timed out after ${CASE_TIMEOUT}s"
    elif [ "$s" -gt 128 ] 2>/dev/null && sig=$(kill -l $((s - 128)) 2>/dev/null); then
        case $sig in
            KILL) echo "$1 killed by SIGKILL (timeout -k, or the OOM killer)";;
            BUS) echo "$1 killed by SIGBUS (a page of a mapped file could not be had: the tmpfs is full?)";;
            *) echo "$1 killed by SIG$sig";;
        esac
    else
        echo "$1 exit $s: $(grep -v '^\s*$' "$3" 2>/dev/null | grep -v 'listening on' | tail -1 | cut -c1-240)"
    fi
}
# Both sides' reasons: status of the sender, its stderr, of the receiver, its stderr.
why2() {
    local r=""
    [ "$1" = 0 ] || r=$(why send "$1" "$2")
    [ "$3" = 0 ] || r="${r:+$r; }$(why recv "$3" "$4")"
    echo "$r"
}

# Results, per case: times (seconds, one per good round), peak RSS of each
# side (max over the rounds), the failure if any, notes.
declare -A times=() rss_s=() rss_r=() failed=() notes=() tot=() wallf=()
mismatch=0
t4_du=0

# Record a run of case $1 (round $round): $2 = seconds, or "" and $3 = why.
record() {
    local c=$1 dt=$2
    if [ -z "$dt" ]; then
        failed[$c]="round $round: $3"
        printf '  %-9s FAIL (%s)\n' "$c" "$3" >&2
        return
    fi
    times[$c]="${times[$c]:-} $dt"
    printf '  %-9s %7.3f s  %6.2f GB/s\n' "$c" "$dt" "$(awk -v b="$4" -v t="$dt" 'BEGIN {print b / t / 1e9}')" >&2
}
peak() { # case, send report, recv report
    local s r
    s=$(rss_mib "$2"); r=$(rss_mib "$3")
    [ -n "$s" ] && rss_s[$1]=$(best "${rss_s[$1]:-0}" "$s")
    [ -n "$r" ] && rss_r[$1]=$(best "${rss_r[$1]:-0}" "$r")
    return 0
}
# The output of case $1 must equal $2; a difference is loud.
same() { # case in out
    if cmp -s "$2" "$3"; then return 0; fi
    echo "ERROR: $1 round $round: the output differs from the input ($(cmp "$2" "$3" 2>&1 | head -1))" >&2
    mismatch=1
    return 1
}

# dd: one process.
run_dd() {
    local out=$fs/out/dd st=0 t0 t1
    t0=$(now)
    sside "$work/dd.s.time" dd if="$in" of="$out" bs=1M status=none 2>"$work/dd.s.err" || st=$?
    t1=$(now)
    peak dd "$work/dd.s.time" /dev/null
    if [ "$st" != 0 ]; then record dd "" "$(why dd "$st" "$work/dd.s.err")"; return; fi
    if ! same dd "$in" "$out"; then record dd "" "output differs"; return; fi
    record dd "$(elapsed "$t0" "$t1")" "" "$size_b"
}

run_socat() {
    local out=$fs/out/socat port rpid st=0 rst=0 t0 t1
    port=$(free_port)
    rside "$work/socat.r.time" socat -u -b 1048576 "TCP-LISTEN:$port,reuseaddr,bind=127.0.0.1" \
        "OPEN:$out,creat,trunc" 2>"$work/socat.r.err" &
    rpid=$!
    if ! wait_port "$port" "$rpid"; then
        kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
        record socat "" "receiver did not listen: $(tail -1 "$work/socat.r.err")"; return
    fi
    t0=$(now)
    sside "$work/socat.s.time" socat -u -b 1048576 "FILE:$in" "TCP:127.0.0.1:$port" \
        2>"$work/socat.s.err" || st=$?
    wait "$rpid" || rst=$?
    t1=$(now)
    peak socat "$work/socat.s.time" "$work/socat.r.time"
    if [ "$st$rst" != 00 ]; then record socat "" "$(why2 "$st" "$work/socat.s.err" "$rst" "$work/socat.r.err")"; return; fi
    if ! same socat "$in" "$out"; then record socat "" "output differs"; return; fi
    record socat "$(elapsed "$t0" "$t1")" "" "$size_b"
}

# iperf3 -F: the server writes what it receives to OUT; whether OUT is
# complete is noted, not judged.
run_iperf3() {
    local out=$fs/out/iperf3 port rpid st=0 rst=0 t0 t1 got note
    port=$(free_port)
    rside "$work/iperf3.r.time" iperf3 -s -1 -B 127.0.0.1 -p "$port" -F "$out" \
        >"$work/iperf3.r.out" 2>"$work/iperf3.r.err" &
    rpid=$!
    if ! wait_port "$port" "$rpid"; then
        kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
        record iperf3 "" "server did not listen: $(tail -1 "$work/iperf3.r.err")"; return
    fi
    t0=$(now)
    sside "$work/iperf3.s.time" iperf3 -c 127.0.0.1 -p "$port" -l 1M -F "$in" \
        >"$work/iperf3.s.out" 2>"$work/iperf3.s.err" || st=$?
    wait "$rpid" || rst=$?
    t1=$(now)
    peak iperf3 "$work/iperf3.s.time" "$work/iperf3.r.time"
    if [ "$st$rst" != 00 ]; then record iperf3 "" "$(why2 "$st" "$work/iperf3.s.err" "$rst" "$work/iperf3.r.err")"; return; fi
    got=$(stat -c %s "$out" 2>/dev/null || echo 0)
    if [ "$got" = "$size_b" ] && cmp -s "$in" "$out"; then
        note="output complete and identical"
    elif [ "$got" -lt "$size_b" ] && cmp -s -n "$got" "$in" "$out"; then
        note="output short: $got of $size_b bytes (a correct prefix)"
    else
        note="output $got of $size_b bytes, differs from the input at byte $({ cmp "$in" "$out" 2>&1 || true; } |
            sed -n 's/.*differ: byte \([0-9]*\).*/\1/p')"
    fi
    notes[iperf3]="${notes[iperf3]:-}round $round: $note; "
    record iperf3 "$(elapsed "$t0" "$t1")" "" "$size_b"
}

# One transit session. Args: case, input file, channels, output file or ""
# (memory), bytes for the rate. Leaves the summaries in $work/CASE.{s,r}.json.
run_transit() {
    local c=$1 src=$2 ch=$3 out=$4 bytes=$5 rpid st=0 rst=0 t0 t1 addr dt ts ws
    local oarg=()
    [ -n "$out" ] && oarg=(--output "$out")
    rm -f "$work/$c.r.err"
    rside "$work/$c.r.time" "$T" recv tcp:127.0.0.1:0 "${oarg[@]}" --json \
        >"$work/$c.r.json" 2>"$work/$c.r.err" &
    rpid=$!
    if ! addr=$(wait_listen "$work/$c.r.err" 2>/dev/null); then
        kill "$rpid" 2>/dev/null || true; wait "$rpid" 2>/dev/null || true
        record "$c" "" "recv did not listen: $(tail -1 "$work/$c.r.err")"; return 1
    fi
    t0=$(now)
    sside "$work/$c.s.time" "$T" send "$addr" --input "$src" --channels "$ch" --json \
        >"$work/$c.s.json" 2>"$work/$c.s.err" || st=$?
    wait "$rpid" || rst=$?
    t1=$(now)
    dt=$(elapsed "$t0" "$t1")
    peak "$c" "$work/$c.s.time" "$work/$c.r.time"
    if [ "$st$rst" != 00 ]; then record "$c" "" "$(why2 "$st" "$work/$c.s.err" "$rst" "$work/$c.r.err")"; return 1; fi
    if [ -n "$out" ] && [ ! -f "$out" ]; then record "$c" "" "both exited 0 but $out is absent"; return 1; fi
    # T6: the sender's total_seconds against the time measured here.
    ts=$(jq -r '.total_seconds // empty' "$work/$c.s.json" 2>/dev/null || true)
    ws=$(jq -r '.wall_seconds // empty' "$work/$c.s.json" 2>/dev/null || true)
    [ -n "$ts" ] && tot[$c]="${tot[$c]:-} $(awk -v a="$ts" -v b="$dt" 'BEGIN {print a / b}')"
    [ -n "$ws" ] && wallf[$c]="${wallf[$c]:-} $(awk -v a="$ws" -v b="$dt" 'BEGIN {print a / b}')"
    REPLY=$dt
    return 0
}

run_t1() {
    local out=$fs/out/transit1
    run_transit transit1 "$in" 1 "$out" "$size_b" || return 0
    if ! same transit1 "$in" "$out"; then record transit1 "" "output differs"; return; fi
    record transit1 "$REPLY" "" "$size_b"
}
run_t2() {
    local out=$fs/out/transit4
    run_transit transit4 "$in" 4 "$out" "$size_b" || return 0
    if ! same transit4 "$in" "$out"; then record transit4 "" "output differs"; return; fi
    record transit4 "$REPLY" "" "$size_b"
}
run_t3() {
    run_transit T3 "$img" 4 "" "$size_b" || return 0
    if [ "$(jq -r .verified "$work/T3.r.json" 2>/dev/null)" != true ]; then
        echo "ERROR: T3 round $round: the receiver's summary does not say verified" >&2
        mismatch=1
        record T3 "" "not verified"; return
    fi
    record T3 "$REPLY" "" "$size_b"
}
run_t4() {
    local out=$fs/out/T4 du res
    run_transit T4 "$sparse" 4 "$out" "$sparse_b" || return 0
    du=$(du -B1 "$out" | cut -f1)
    if ! res=$(sparse_cmp "$sparse" "$out"); then
        echo "ERROR: T4 round $round: $res" >&2
        mismatch=1
        record T4 "" "output differs: $res"; return
    fi
    t4_du=$(best "${t4_du:-0}" "$du")
    notes[T4]="$res"
    record T4 "$REPLY" "" "$sparse_b"
}

# Exact comparison of two (sparse) files without reading their holes: the
# union of both files' data ranges (SEEK_DATA/SEEK_HOLE) is compared byte
# by byte; outside it both are holes, which read as zero.
sparse_cmp() {
    python3 - "$1" "$2" <<'EOF'
import os, sys
a, b = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
n = os.fstat(a).st_size
if os.fstat(b).st_size != n:
    print(f"sizes differ: {n} and {os.fstat(b).st_size}")
    sys.exit(1)
def ranges(fd):
    off = 0
    while off < n:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            return
        off = os.lseek(fd, d, os.SEEK_HOLE)
        yield d, off
merged = []
for s, e in sorted(list(ranges(a)) + list(ranges(b))):
    if merged and s <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], e)
    else:
        merged.append([s, e])
total = 0
for s, e in merged:
    while s < e:
        k = min(16 << 20, e - s)
        if os.pread(a, k, s) != os.pread(b, k, s):
            print(f"contents differ in [{s}, {s + k})")
            sys.exit(1)
        s += k
        total += k
print(f"identical ({total} bytes in {len(merged)} data ranges compared, the rest is holes in both)")
EOF
}

# --- the inputs ----------------------------------------------------------
mkdir -p "$fs/out"
echo "== making the inputs in $fs (tmpfs${mounted:+, size=$TMPFS_SIZE})" >&2
in=$fs/in
head -c "$size_b" /dev/urandom >"$in"
cases=(dd socat iperf3 transit1 transit4)
img="" sparse=""
if [ "$QUICK" != 1 ]; then
    img=$fs/t3.img
    python3 - "$img" "$size_b" <<'EOF'
import random, sys
# One page of each pair is zero, the other random; the seed picks which.
path, size = sys.argv[1], int(sys.argv[2])
rng, page = random.Random(1), 4096
zero = bytes(page)
with open(path, "wb") as f:
    buf = bytearray()
    for _ in range(size // (2 * page)):
        data = rng.randbytes(page)
        buf += data + zero if rng.getrandbits(1) else zero + data
        if len(buf) >= 16 << 20:
            f.write(buf)
            buf.clear()
    f.write(buf)
EOF
    cases+=(T3)
fi
if [ "$sparse_b" -gt 0 ]; then
    sparse=$fs/t4.sparse
    ext=$((size_b / EXTENTS))
    stride=$((sparse_b / EXTENTS / 4096 * 4096))
    if [ "$ext" -gt "$stride" ]; then
        echo "SPARSE=$SPARSE is too small for SIZE=$SIZE in $EXTENTS extents" >&2
        exit 1
    fi
    truncate -s "$sparse_b" "$sparse"
    for i in $(seq 0 $((EXTENTS - 1))); do
        dd if=/dev/urandom of="$sparse" bs=1M iflag=count_bytes,fullblock oflag=seek_bytes \
            seek=$((i * stride)) count="$ext" conv=notrunc status=none
    done
    cases+=(T4)
fi

# --- the rounds ----------------------------------------------------------
echo "== $REPS rounds of: ${cases[*]} ($SIZE${sparse:+; T4: $SPARSE with $SIZE of data}), PIN=$PIN" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$REPS"); do
    # Each round starts one case later: the first case of a round runs
    # after the previous round's outputs were freed and the checks ran,
    # when this VM's memory is slowest to allocate (freed pages go back to
    # the host), so every case takes its turn there.
    n=${#cases[@]}
    shift_by=$(((round - 1) % n))
    order=("${cases[@]:shift_by}" "${cases[@]:0:shift_by}")
    echo "round $round: ${order[*]}" >&2
    for c in "${order[@]}"; do
        [ -n "${failed[$c]:-}" ] && continue      # failed before: not again
        case $c in
            dd) run_dd;; socat) run_socat;; iperf3) run_iperf3;;
            transit1) run_t1;; transit4) run_t2;; T3) run_t3;; T4) run_t4;;
        esac
        rm -rf "$fs/out" && mkdir "$fs/out"       # a fresh file every run
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
rm -f "$in" ${img:+"$img"} ${sparse:+"$sparse"}

# --- the dense RSS case ----------------------------------------------------
if [ "$dense_b" -gt 0 ]; then
    echo "== dense: a $DENSE file -> a file in $DENSE_DIR, 4 channels" >&2
    round=1
    dense_in=$fs/dense
    head -c "$dense_b" /dev/urandom >"$dense_in"
    dense_out=$(mktemp -d "$DENSE_DIR/transit-e2e-XXXXXX")
    if run_transit dense "$dense_in" 4 "$dense_out/out" "$dense_b"; then
        if same dense "$dense_in" "$dense_out/out"; then
            record dense "$REPLY" "" "$dense_b"
        else
            record dense "" "output differs"
        fi
    fi
    rm -rf "$dense_in" "$dense_out"
fi

# --- the report --------------------------------------------------------------
# shellcheck disable=SC2086 # the lists of numbers are split on purpose
med() { [ -n "${times[$1]:-}" ] && median ${times[$1]}; return 0; }   # case -> median s
# shellcheck disable=SC2086
fastest() { [ -n "${times[$1]:-}" ] && printf '%s\n' ${times[$1]} | sort -g | head -1; return 0; }
rate() { [ -n "$2" ] && awk -v b="$1" -v t="$2" 'BEGIN {printf "%.2f", b / t / 1e9}'; return 0; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; return 0; }
fmt() { if [ -n "$1" ]; then printf '%.3f' "$1"; else printf -- '-'; fi; }
# PASS when $1 is set and the awk condition $2 holds for x = $1.
check() { if [ -n "$1" ] && awk -v x="$1" "BEGIN {exit !($2)}"; then echo PASS; else echo FAIL; fi; }
has() { case " ${all[*]} " in *" $1 "*) return 0;; *) return 1;; esac; }

declare -A label=(
    [dd]="dd bs=1M (local copy, floor)" [socat]="socat -b 1M" [iperf3]="iperf3 -l 1M -F"
    [transit1]="transit, 1 channel" [transit4]="transit, 4 channels"
    [T3]="T3: 50% zero image -> memory" [T4]="T4: sparse $SPARSE -> file" [dense]="dense $DENSE -> file (once)"
)
declare -A bytes=([dd]=$size_b [socat]=$size_b [iperf3]=$size_b [transit1]=$size_b
    [transit4]=$size_b [T3]=$size_b [T4]=$sparse_b [dense]=$dense_b)
all=("${cases[@]}")
[ "$dense_b" -gt 0 ] && all+=(dense)

echo
echo "whole commands, sender start -> both exited and output in place; loopback TCP, tmpfs"
echo "$(nproc) cores, $(uname -r), $REPS rounds, SIZE=$SIZE, PIN=$PIN, $T"
echo
printf '%-30s %9s %9s %9s %9s  %s\n' case "best s" "median s" "best GB/s" "med GB/s" "peak RSS send / recv MiB"
for c in "${all[@]}"; do
    b=$(fastest "$c"); m=$(med "$c")
    if [ -z "$m" ]; then
        printf '%-30s FAIL: %s\n' "${label[$c]}" "${failed[$c]:-no result}"
        if [ -n "${rss_s[$c]:-}${rss_r[$c]:-}" ]; then
            printf '%-30s %s / %s MiB (the failed run)\n' "" "${rss_s[$c]:--}" "${rss_r[$c]:--}"
        fi
        continue
    fi
    printf '%-30s %9s %9s %9s %9s  %s / %s\n' "${label[$c]}" "$(fmt "$b")" "$(fmt "$m")" \
        "$(rate "${bytes[$c]}" "$b")" "$(rate "${bytes[$c]}" "$m")" "${rss_s[$c]:--}" "${rss_r[$c]:--}"
    if [ -n "${failed[$c]:-}" ]; then printf '%-30s then FAIL: %s\n' "" "${failed[$c]}"; fi
done
t4note=""
[ -n "$sparse" ] && t4note="; T4's is the $SPARSE file's"
echo "(GB/s = file size / time$t4note; the RSS is the largest of the rounds)"
if [ -n "${notes[iperf3]:-}" ]; then echo "iperf3 -F: ${notes[iperf3]%; }"; fi
if [ -n "${notes[T4]:-}" ]; then echo "T4 output: du $((t4_du >> 20)) MiB; ${notes[T4]}"; fi

echo
echo "targets (medians of the rounds):"
s_rate=$(rate "$size_b" "$(med socat)")
r1=$(ratio "$(rate "$size_b" "$(med transit1)")" "$s_rate")
r2=$(ratio "$(rate "$size_b" "$(med transit4)")" "$s_rate")
t2=$(med transit4)
printf '  T1 transit 1 ch rate / socat rate   %7s  (>= 1.0)   %s\n' "${r1:--}" "$(check "$r1" "x >= 1.0")"
printf '  T2 transit 4 ch rate / socat rate   %7s  (>= 1.25)  %s\n' "${r2:--}" "$(check "$r2" "x >= 1.25")"
if has T3; then
    r3=$(ratio "$(med T3)" "$t2")
    printf '  T3 T3 time / T2 time                %7s  (<= 0.6)   %s\n' "${r3:--}" "$(check "$r3" "x <= 0.6")"
fi
if has T4; then
    r4=$(ratio "$(med T4)" "$t2")
    du_mib=""
    [ -n "$(med T4)" ] && du_mib=$((t4_du >> 20))
    ident=FAIL
    [ -n "$(med T4)" ] && [ -z "${failed[T4]:-}" ] && ident=PASS
    printf '  T4 T4 time / T2 time                %7s  (<= 1.5)   %s\n' "${r4:--}" "$(check "$r4" "x <= 1.5")"
    printf '  T4 du of the output, MiB            %7s  (<= %d)  %s\n' "${du_mib:--}" $((size_b * 11 / 10 >> 20)) \
        "$(check "$du_mib" "x > 0 && x <= $((size_b * 11 / 10 >> 20))")"
    printf '  T4 output identical (every round)   %7s             %s\n' "" "$ident"
elif [ "$QUICK" != 1 ]; then
    echo "  T4 skipped (SPARSE=0 or no tmpfs of our own)"
fi
for c in transit1 transit4 T4 dense; do
    has "$c" || continue
    s=${rss_s[$c]:-} r=${rss_r[$c]:-} v=FAIL
    if [ -n "$(med "$c")" ] && [ "$(check "$s" "x <= $RSS_LIMIT_MIB")" = PASS ] \
        && [ "$(check "$r" "x <= $RSS_LIMIT_MIB")" = PASS ]; then v=PASS; fi
    printf '  T5 peak RSS, %-24s %s / %s MiB (<= %d each)  %s\n' "${label[$c]%% (*}:" "${s:--}" "${r:--}" \
        "$RSS_LIMIT_MIB" "$v"
done
t6=FAIL
t6_n=0
for c in transit1 transit4 T3 T4 dense; do
    if ! has "$c" || [ -z "${times[$c]:-}" ]; then continue; fi
    # shellcheck disable=SC2086
    w=$([ -n "${wallf[$c]:-}" ] && printf %.3f "$(median ${wallf[$c]})")
    t6_n=$((t6_n + 1))
    [ "$t6_n" = 1 ] && t6=PASS
    if [ -n "${tot[$c]:-}" ]; then
        # shellcheck disable=SC2086
        tr=$(printf %.3f "$(median ${tot[$c]})")
        v=$(check "$tr" "x >= 0.95 && x <= 1.05")
        [ "$v" = PASS ] || t6=FAIL
        printf '  T6 %-32s total_seconds / outside %s (0.95..1.05)  %s  (wall_seconds / outside %s)\n' \
            "${label[$c]%% (*}:" "$tr" "$v" "${w:--}"
    else
        t6=FAIL
        printf '  T6 %-32s total_seconds: missing  (wall_seconds / outside %s)\n' "${label[$c]%% (*}:" "${w:--}"
    fi
done
[ "$t6_n" -gt 0 ] || echo "  T6 no transit case has a result"
echo "  T6 total_seconds within 5%                             $t6"

if [ "$mismatch" = 1 ]; then
    echo
    echo "ERROR: an output differed from its input (see above): these numbers are not a measurement" | tee /dev/stderr
    exit 3
fi
exit 0
