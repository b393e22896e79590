#!/usr/bin/env bash
# Run the shell examples of README.md and docs/*.md as a user would type
# them, on loopback, and say PASS, FAIL or SKIPPED for each with its
# file:line. Exit status 0 when every example that is not marked skip
# passed, 1 otherwise (2: the script could not start).
#
#   scripts/run-doc-examples.sh                   # cargo build -p transit, then every file
#   scripts/run-doc-examples.sh docs/cli.md       # only these files (paths from the repository root)
#   TRANSIT=target/release/transit scripts/run-doc-examples.sh   # this binary, no build
#
# The convention for writing examples is in docs/cli.md, "The examples
# are tested": ```sh and ```bash blocks are run (```text and fences
# without a language are not); each block is one bash script (set -e -o
# pipefail) in a fresh directory holding vm.img, data.src and dir/, with
# `transit` on PATH, under `timeout BLOCK_TIMEOUT`, in a network namespace
# of its own when one can be made; a line ending in `&`, or whose comment
# starts with `# on the destination`, runs in the background and the next
# line waits until it listens; the host `dest` of an address becomes
# 127.0.0.1 and /etc/pki/transit a throw-away PKI; a block is skipped only
# when the line before its fence says `<!-- example: skip (the reason) -->`.
# A block passes when every command in it exited 0 in time and every
# `--output FILE` it names exists afterwards; a failure shows the block as
# run and the end of its output.
#
# Knobs:
#   TRANSIT=path        the binary to use (otherwise cargo build -p transit,
#                       then the debug build's target/debug/transit)
#   BLOCK_TIMEOUT=60    seconds per block
#   NETNS=auto          1: a network namespace per block or fail; 0: the
#                       machine's own loopback; auto: 1 when unshare and ip
#                       can, else 0 with a note
#   TMPFS=auto          1: the files in a tmpfs of a mount namespace of the
#                       script's own, or fail; 0: in TMPDIR; auto: 1 when
#                       unshare can, else 0
#   VERBOSE=1           show every block's output, not only a failure's
set -euo pipefail
trap 'echo "run-doc-examples.sh: line $LINENO: a command failed (status $?): the script broke" >&2' ERR
self=$(realpath "$0")
if [ -n "${TRANSIT:-}" ]; then TRANSIT=$(realpath -m "$TRANSIT"); fi
cd "$(dirname "$self")/.."

BLOCK_TIMEOUT=${BLOCK_TIMEOUT:-60}
NETNS=${NETNS:-auto}
VERBOSE=${VERBOSE:-0}

if [ "$#" -gt 0 ]; then
    files=("$@")
else
    files=(README.md docs/*.md)
fi

# Tools of the script itself (socat and tar are the examples' own: a block
# that uses a missing one fails, it is not skipped).
for tool in timeout openssl awk; do
    if ! command -v "$tool" >/dev/null; then
        echo "run-doc-examples.sh: missing $tool (bash .ci/run installs it)" >&2
        exit 2
    fi
done

if [ -n "${TRANSIT:-}" ]; then
    T=$(realpath "$TRANSIT")
else
    cargo build -q -p transit >&2
    T=$(realpath "${CARGO_TARGET_DIR:-target}/debug/transit")
fi
if [ ! -x "$T" ]; then
    echo "run-doc-examples.sh: $T is not an executable" >&2
    exit 2
fi

# A mount namespace of our own for the rest of the run, in which the work
# directory is a tmpfs (files of a few hundred MiB are written, fsynced and
# replaced; on a disk mounted with `discard` each such replace costs
# seconds). It ends with the run, even a killed one. Without it (TMPFS=0,
# or no unshare): a directory in TMPDIR.
TMPFS=${TMPFS:-auto}
if [ -z "${RUN_DOC_EXAMPLES_MOUNT_NS:-}" ] && [ "$TMPFS" != 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then mns=(-m); else mns=(-r -m); fi
    if unshare "${mns[@]}" true 2>/dev/null; then
        export RUN_DOC_EXAMPLES_MOUNT_NS=1 TRANSIT="$T"
        exec unshare "${mns[@]}" bash "$self" "$@"
    fi
fi

# A network namespace per block: root makes one directly, anyone else in
# a user namespace of their own; loopback is brought up inside.
ns=()
if [ "$(id -u)" -eq 0 ]; then unshare_args=(-n); else unshare_args=(-r -n); fi
if [ "$NETNS" != 0 ]; then
    if unshare "${unshare_args[@]}" ip link set lo up 2>/dev/null; then
        ns=(unshare "${unshare_args[@]}" sh -c 'ip link set lo up && exec "$@"' netns)
    elif [ "$NETNS" = 1 ]; then
        echo "run-doc-examples.sh: NETNS=1 but no network namespace could be made (unshare, ip)" >&2
        exit 2
    else
        echo "run-doc-examples.sh: note: no network namespace (unshare, ip); the examples use this machine's loopback, ports such as 4444 must be free" >&2
    fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/transit-doc-examples.XXXXXX")
mounted=0
# shellcheck disable=SC2317 # run by the trap
cleanup() {
    if [ -n "${tpid:-}" ]; then kill -KILL -- "-$tpid" 2>/dev/null || true; fi
    if [ "$mounted" = 1 ]; then umount "$work" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${RUN_DOC_EXAMPLES_MOUNT_NS:-}" ] \
    && mount -t tmpfs -o size=2g,mode=0700 transit-doc-examples "$work"; then
    mounted=1
elif [ "$TMPFS" = 1 ]; then
    echo "run-doc-examples.sh: TMPFS=1 but no tmpfs could be mounted (unshare -m, mount)" >&2
    exit 2
fi

# --- what every block starts with ---------------------------------------
mkdir -p "$work/bin" "$work/fixture/dir/sub" "$work/fixture/pki" "$work/blocks"
ln -s "$T" "$work/bin/transit"
(
    cd "$work/fixture"
    "$T" send file:vm.img --ram 64M --zero-ratio 0.5 --seed 15 2>/dev/null
    head -c 1M /dev/urandom >data.src
    seq 1 20000 >dir/numbers
    head -c 64K /dev/urandom >dir/sub/random
    echo "a small tree" >dir/README

    cd pki
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=doc examples CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout ca-key.pem -out ca-cert.pem 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=dest.example" -keyout server-key.pem -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:dest.example\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -set_serial 1 -days 2 \
        -extfile server.ext -out server-cert.pem 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=source" -keyout client-key.pem -out client.csr 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem -set_serial 2 -days 2 \
        -extfile client.ext -out client-cert.pem 2>/dev/null
    rm -f ./*.csr ./*.ext ca-key.pem
)

# --- the helpers a block script sources ---------------------------------
# __bg PID FILE CMD: remember background job PID (its stderr is in FILE)
# and wait until it listens; __end: wait for every background job.
cat >"$work/block-lib.sh" <<'EOF'
__bg_pids=()
__bg_cmds=()
__descendants() {
    local c
    echo "$1"
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do __descendants "$c"; done
}
# Whether process $1 or one of its descendants holds a listening TCP or
# UNIX socket (of this network namespace).
__has_listener() {
    local listening p fd link
    listening=$(awk 'FNR > 1 && $4 == "0A" { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
        awk 'FNR > 1 && $4 == "00010000" { print $7 }' /proc/net/unix)
    for p in $(__descendants "$1"); do
        for fd in /proc/"$p"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            case $link in
                socket:*) link=${link#socket:[}; link=${link%]}
                    if grep -qx -- "$link" <<<"$listening"; then return 0; fi ;;
            esac
        done
    done
    return 1
}
__alive() { # not exited, not a zombie
    local st
    [ -r /proc/"$1"/stat ] || return 1
    st=$(sed 's/.*) //' /proc/"$1"/stat 2>/dev/null | cut -d' ' -f1)
    [ -n "$st" ] && [ "$st" != Z ]
}
__bg() {
    local pid=$1 errf=$2 cmd=$3 deadline=$((SECONDS + 10))
    __bg_pids+=("$pid")
    __bg_cmds+=("$cmd")
    while [ "$SECONDS" -lt "$deadline" ]; do
        case $cmd in
            *"transit recv"*)
                if [ -f "$errf" ] && head -n "$(wc -l <"$errf")" "$errf" | grep '^transit: listening on ' >/dev/null; then return 0; fi ;;
            *)
                if __has_listener "$pid"; then return 0; fi ;;
        esac
        if ! __alive "$pid"; then
            local rc=0
            wait "$pid" || rc=$?
            echo "run-doc-examples: the background command exited (status $rc) before it listened: $cmd" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "run-doc-examples: the background command did not listen within 10 s: $cmd" >&2
    exit 1
}
__end() {
    local i rc
    for i in "${!__bg_pids[@]}"; do
        rc=0
        wait "${__bg_pids[$i]}" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "run-doc-examples: the background command exited with status $rc: ${__bg_cmds[$i]}" >&2
            exit 1
        fi
    done
}
EOF

# --- one block -----------------------------------------------------------
pass=0 fail=0 skip=0 nrun=0
# The block's lines with the substitutions.
substitute() {
    local l=$1 a b
    a=tcp:dest: b=tcp:127.0.0.1:
    l=${l//"$a"/"$b"}
    a=://dest: b=://127.0.0.1:
    l=${l//"$a"/"$b"}
    a=/etc/pki/transit b=pki
    l=${l//"$a"/"$b"}
    printf '%s\n' "$l"
}

# make_script LINE...: the bash script of a block.
make_script() {
    local joined=() l cur="" n=0 re_amp='^(.*[^&])&[[:space:]]*(#.*)?$'
    # join continuation lines
    for l in "$@"; do
        if [[ $l == *\\ ]]; then cur+="${l%\\} "; continue; fi
        joined+=("$cur$l")
        cur=""
    done
    [ -z "$cur" ] || joined+=("$cur")
    echo 'set -e -o pipefail'
    # shellcheck disable=SC2016 # expanded by the block script
    echo '. "$__lib"'
    for l in "${joined[@]}"; do
        l=$(substitute "$l")
        local cmd=""
        if [[ $l =~ ^[[:space:]]*(#|$) ]]; then
            :
        elif [[ $l =~ $re_amp ]]; then
            cmd=${BASH_REMATCH[1]}
        elif [[ $l =~ \#[[:space:]]*on\ the\ destination ]]; then
            cmd=$l
        fi
        if [ -n "$cmd" ]; then
            n=$((n + 1))
            printf '{ %s\n} 2> >(tee bg%d.err >&2) &\n' "$cmd" "$n"
            printf '__bg $! bg%d.err %q\n' "$n" "$cmd"
        else
            printf '%s\n' "$l"
        fi
    done
    echo '__end'
}

# The --output FILE arguments of a block (not -), one a line.
outputs() {
    local l w prev words
    for l in "$@"; do
        prev=""
        read -ra words <<<"$l"
        for w in "${words[@]}"; do
            w=${w//\'/}
            w=${w//\"/}
            if [ "$prev" = --output ] && [ "$w" != - ]; then printf '%s\n' "$w"; fi
            prev=$w
        done
    done
}

show() { sed 's/^/    | /' "$1" | tail -n "${2:-40}"; }

# run_block FILE LINE MARKER LINES...
run_block() {
    local file=$1 line=$2 marker=$3
    shift 3
    local where="$file:$line"
    if [ -n "$marker" ]; then
        if [[ $marker =~ ^skip[[:space:]]*(.*)$ ]]; then
            local why=${BASH_REMATCH[1]}
            why=${why#(}
            why=${why%)}
            if [ -z "$why" ]; then
                echo "FAIL    $where: marked skip without a reason"
                fail=$((fail + 1))
                return
            fi
            echo "SKIPPED $where: $why"
            skip=$((skip + 1))
            return
        fi
        echo "FAIL    $where: unknown marker <!-- example: $marker -->"
        fail=$((fail + 1))
        return
    fi
    nrun=$((nrun + 1))
    local n=$nrun
    local d=$work/blocks/$n
    mkdir -p "$d"
    cp -r --sparse=always "$work/fixture/." "$d/"
    make_script "$@" >"$work/blocks/$n.sh"
    local start rc=0 t
    start=$(date +%s.%N)
    (
        cd "$d"
        export PATH="$work/bin:$PATH" __lib="$work/block-lib.sh"
        exec timeout -k 5 "$BLOCK_TIMEOUT" "${ns[@]}" bash "$work/blocks/$n.sh"
    ) >"$work/blocks/$n.log" 2>&1 </dev/null &
    tpid=$!
    wait "$tpid" || rc=$?
    # whatever the block left running (timeout leads its process group)
    kill -KILL -- "-$tpid" 2>/dev/null || true
    tpid=""
    t=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    local why=""
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        why="timed out after $BLOCK_TIMEOUT s"
    elif [ "$rc" -ne 0 ]; then
        why="exit status $rc"
    else
        local o p
        while IFS= read -r o; do
            case $o in /*) p=$o ;; *) p=$d/$o ;; esac
            [ -e "$p" ] || why="${why:+$why; }--output $o is missing"
        done < <(outputs "$@")
    fi
    if [ -z "$why" ]; then
        echo "PASS    $where (${t} s)"
        pass=$((pass + 1))
        if [ "$VERBOSE" = 1 ]; then show "$work/blocks/$n.log" 1000; fi
    else
        echo "FAIL    $where: $why (${t} s)"
        fail=$((fail + 1))
        echo "    the block as run:"
        # shellcheck disable=SC2016 # a literal line of the block script
        show "$work/blocks/$n.sh" 1000 | grep -v '| \(set -e -o pipefail\|\. "\$__lib"\)$'
        echo "    its output (the end):"
        show "$work/blocks/$n.log"
    fi
    rm -rf "$d"
}

# --- the files -----------------------------------------------------------
t0=$(date +%s)
for f in "${files[@]}"; do
    lineno=0 in=0 marker="" pending="" lang="" start=0
    body=()
    # shellcheck disable=SC2094 # $f is read here and only named elsewhere
    while IFS= read -r l || [ -n "$l" ]; do
        lineno=$((lineno + 1))
        if [ "$in" = 0 ]; then
            if [[ $l =~ ^\`\`\`([A-Za-z0-9_-]*)[[:space:]]*$ ]]; then
                lang=${BASH_REMATCH[1]} in=1 start=$lineno marker=$pending pending="" body=()
            elif [[ $l =~ ^\<!--[[:space:]]*example:[[:space:]]*(.*[^[:space:]])[[:space:]]*--\>[[:space:]]*$ ]]; then
                pending=${BASH_REMATCH[1]}
            elif [[ $l =~ [^[:space:]] ]]; then
                if [ -n "$pending" ]; then
                    echo "FAIL    $f:$((lineno - 1)): <!-- example: $pending --> is not right before a code block"
                    fail=$((fail + 1))
                fi
                pending=""
            fi
            continue
        fi
        if [[ $l =~ ^\`\`\`[[:space:]]*$ ]]; then
            in=0
            case $lang in
                sh | bash) run_block "$f" "$start" "$marker" "${body[@]}" ;;
                console | shell | shell-session | zsh)
                    echo "FAIL    $f:$start: \`\`\`$lang: use \`\`\`sh for commands (run) or \`\`\`text for output (not run)"
                    fail=$((fail + 1)) ;;
                *)
                    if [ -n "$marker" ]; then
                        echo "FAIL    $f:$start: <!-- example: $marker --> before a block that is not run (\`\`\`$lang)"
                        fail=$((fail + 1))
                    fi ;;
            esac
            continue
        fi
        body+=("$l")
    done <"$f"
    if [ "$in" = 1 ]; then
        echo "FAIL    $f:$start: the code block is not closed"
        fail=$((fail + 1))
    fi
done

echo "run-doc-examples: $((pass + fail + skip)) blocks: $pass passed, $fail failed, $skip skipped ($(($(date +%s) - t0)) s)"
if [ "$fail" -gt 0 ]; then exit 1; fi
