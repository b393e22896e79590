#!/usr/bin/env bash
# What a QEMU live migration through transit costs the user, side by side
# with the other ways to carry it: rounds of `scripts/qemu-migrate.sh`,
# interleaved (every path sees the same machine state), for
#   transit   migrate "exec:transit send ..." into -incoming "exec:transit recv ... --output -"
#   socat     the same exec: pipeline through socat
#   tcp       QEMU's own tcp: migration
#   multifd   QEMU's own multifd over tcp:, CHANNELS channels
# Each figure is the time from the migrate command to the destination
# having loaded the whole state (timed from outside; every run also checks
# the guest memory and that the destination runs on, and a run that fails
# its checks fails this script).
#
#   scripts/bench-qemu.sh                                   # release build, KVM if usable, 3 rounds
#   REPS=5 ACCEL=tcg MEM=512 DATA=256 scripts/bench-qemu.sh
#   TRANSIT=/path/to/transit scripts/bench-qemu.sh          # no cargo build
#
# Knobs: REPS=3, MEM=2048, DATA=1024 (MiB of random guest bytes), CHANNELS=4
# (transit and multifd), ACCEL (kvm when /dev/kvm opens, else tcg), PATHS
# ("transit socat tcp multifd"). Prints best and median per path and the
# median ratios; target: transit at least 1.2x socat's speed (median
# socat / transit >= 1.2), exit 1 if missed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

REPS=${REPS:-3}
MEM=${MEM:-2048}
DATA=${DATA:-1024}
CHANNELS=${CHANNELS:-4}
PATHS=${PATHS:-transit socat tcp multifd}
if [ -z "${ACCEL:-}" ]; then
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi

TRANSIT=$(transit_binary)
export TRANSIT MEM DATA CHANNELS ACCEL

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "QEMU migration, migrate command -> destination loaded; $(nproc) cores, $(uname -r)"
echo "ACCEL=$ACCEL MEM=$MEM MiB DATA=$DATA MiB CHANNELS=$CHANNELS, $REPS rounds, $TRANSIT"
qemu-system-x86_64 --version 2>/dev/null | head -n 1
for r in $(seq 1 "$REPS"); do
    for v in $PATHS; do
        if ! VIA=$v scripts/qemu-migrate.sh >"$work/out" 2>&1; then
            echo "round $r, $v: failed" >&2
            tail -n 20 "$work/out" >&2
            exit 1
        fi
        line=$(grep '^PASS: ' "$work/out")
        secs=$(sed -n 's/.* migrated in \([0-9.]*\) s.*/\1/p' <<<"$line")
        down=$(sed -n 's/.*downtime \([0-9]*\) ms.*/\1/p' <<<"$line")
        echo "$secs" >>"$work/$v"
        printf 'round %d, %-8s %7.3f s (downtime %s ms)\n' "$r" "$v" "$secs" "$down"
    done
done

echo
printf '%-10s %8s %9s\n' path "best s" "median s"
for v in $PATHS; do
    # shellcheck disable=SC2046
    b=$(printf '%s\n' $(cat "$work/$v") | sort -g | head -n 1)
    # shellcheck disable=SC2046
    m=$(median $(cat "$work/$v"))
    echo "$m" >"$work/$v.median"
    printf '%-10s %8.3f %9.3f\n' "$v" "$b" "$m"
done
echo
status=0
for v in $PATHS; do
    [ "$v" = transit ] && continue
    ratio=$(awk -v a="$(cat "$work/$v.median")" -v b="$(cat "$work/transit.median" 2>/dev/null || echo 0)" \
        'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}')
    if [ "$v" = socat ]; then
        verdict=PASS
        awk -v x="$ratio" 'BEGIN {exit !(x >= 1.2)}' || {
            verdict=FAIL
            status=1
        }
        echo "socat / transit (median time; speed-up of transit): $ratio  (target >= 1.2) $verdict"
    else
        echo "$v / transit (median time): $ratio"
    fi
done
exit "$status"
