# Helpers shared by the bench scripts; they source this file (it is not
# run on its own).

# PIN=1: receivers on CPU 1, senders on CPU 0, so the scheduler's placement
# of the two processes (both on one core halves every rate) does not decide
# the result; PIN=0 (default) lets the scheduler place them. Sets the
# arrays RPIN and SPIN to prefix the commands with.
PIN=${PIN:-0}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    RPIN=(taskset -c 1)
    SPIN=(taskset -c 0)
else
    RPIN=()
    SPIN=()
fi

# The address of the first complete "listening on" line of a receiver's
# stderr (a line still being written could give a cut-off address).
listen_addr() {
    [ -f "$1" ] || return 0
    head -n "$(wc -l <"$1")" "$1" 2>/dev/null | grep -o 'listening on [^ ]*' | head -1 | cut -d' ' -f3
}

# Wait up to 10 s for the receiver whose stderr is $1 to listen, and print
# its address; if it does not, show its stderr and fail.
wait_listen() {
    local addr="" _
    for _ in $(seq 1 200); do
        addr=$(listen_addr "$1") || true
        if [ -n "$addr" ]; then
            echo "$addr"
            return 0
        fi
        sleep 0.05
    done
    echo "recv did not listen" >&2
    cat "$1" >&2
    return 1
}

# CPU seconds per GB of payload of one transit side's channel threads
# (their own CPU clocks: image generation and waiting are left out), from
# its --json summary.
cpu_per_gb() { jq '([.per_channel[].cpu_seconds] | add) / (.bytes / 1e9)' "$1"; }

# The largest and the median of the arguments.
best() { printf '%s\n' "$@" | sort -g | tail -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{x[NR] = $1} END {print (NR % 2) ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2}'; }

# install_missing PKG...: install the Debian packages named (apt-get, as
# root; otherwise say what is missing and fail). Callers list a package
# only when its tool is absent, e.g.
#   need=(); command -v jq >/dev/null || need+=(jq); install_missing "${need[@]}"
install_missing() {
    [ "$#" -gt 0 ] || return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing $*: install them (apt-get install $*)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# transit_binary: print the binary to measure: $TRANSIT if set, else a
# release build (built now).
transit_binary() {
    if [ -n "${TRANSIT:-}" ]; then
        realpath "$TRANSIT"
    else
        cargo build --release -p transit >&2
        realpath target/release/transit
    fi
}
