#!/usr/bin/env bash
# A simulated consortium on one machine: a hub network namespace (where the coordinator runs)
# and three institutions, each joined to the hub by its own link of 100 Mbit/s with 25 ms each
# way (50 ms round trip), as between sites on a wide-area network.
#
#   deploy/consortium/consortium.sh up        build the namespaces, links, shaping and delayers (idempotent)
#   deploy/consortium/consortium.sh down      remove all of it, also after a partial failure (idempotent)
#   deploy/consortium/consortium.sh status    namespaces, addresses, qdiscs, delayers, measured RTT per site
#   deploy/consortium/consortium.sh exec NS CMD...   run CMD in NS: hub | site1 | site2 | site3
#   deploy/consortium/consortium.sh measure   RTT, TCP throughput each way per link, delayer CPU
#
# Layout (root only; nothing is added to the host's own namespace):
#   cohort-hub    lo 127.0.0.1 and 10.77.0.1/32 (the hub's address: the coordinator listens on it)
#                 veth-siteN 10.77.N.1/24 for N = 1..3
#   cohort-siteN  veth-hub 10.77.N.2/24, route 10.77.0.0/16 via 10.77.N.1
# Each veth end has a tbf qdisc at the link rate (egress shaping on both ends). The delay is
# added on ingress: in every namespace an iptables raw-table PREROUTING rule sends what arrives
# on its veths to NFQUEUE 0, where nfq_delay (nfq_delay.c, built here with gcc) holds each packet
# for the one-way delay. Delaying on ingress keeps the sender's TCP small-queue accounting out of
# it (a packet is orphaned from its socket when it crosses the veth), so TCP reaches the rate.
#
# Environment: COHORT_LINK_RATE (default 100mbit), COHORT_LINK_DELAY_MS (default 25, one way),
#              COHORT_DELAY_BATCH_US (default 200: packets due this close together leave together),
#              COHORT_CONSORTIUM_RUN (runtime files: pid files, logs; default /run/cohort-consortium).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
rate="${COHORT_LINK_RATE:-100mbit}"
delay_ms="${COHORT_LINK_DELAY_MS:-25}"
run_dir="${COHORT_CONSORTIUM_RUN:-/run/cohort-consortium}"
build_dir="$here/.build"
delayer="$build_dir/nfq_delay"
hub=cohort-hub
sites=(1 2 3)
all_ns=("$hub" cohort-site1 cohort-site2 cohort-site3)
hub_addr=10.77.0.1

say() { printf '[consortium] %s\n' "$*"; }
warn() { printf '[consortium] warning: %s\n' "$*" >&2; }
die() { printf '[consortium] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, tc and iptables need CAP_NET_ADMIN): sudo $0 ${*:-}"
}

ns_exists() { [ -e "/run/netns/$1" ]; }
in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

# Serialise up/down/status so two callers never interleave.
take_lock() {
    mkdir -p /run/lock
    exec 9> /run/lock/cohort-consortium.lock
    flock -w 60 9 || die "another consortium.sh holds /run/lock/cohort-consortium.lock"
}

# --- tools -----------------------------------------------------------------------------------

ensure_tools() {
    local need=()
    command -v ip > /dev/null && command -v tc > /dev/null || need+=(iproute2)
    command -v iptables > /dev/null || need+=(iptables)
    command -v gcc > /dev/null || need+=(gcc libc6-dev)
    [ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need+=(libnetfilter-queue-dev)
    [ -f /usr/include/libmnl/libmnl.h ] || need+=(libmnl-dev)
    command -v ping > /dev/null || need+=(iputils-ping)
    command -v flock > /dev/null || need+=(util-linux)
    command -v python3 > /dev/null || need+=(python3)
    if ((${#need[@]})); then
        command -v apt-get > /dev/null || die "missing ${need[*]} and no apt-get to install them"
        say "installing Debian packages: ${need[*]}"
        apt-get update -qq > /dev/null || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null \
            || die "apt-get install -y ${need[*]} failed"
    fi
}

build_delayer() {
    mkdir -p "$build_dir"
    if [ ! -x "$delayer" ] || [ "$here/nfq_delay.c" -nt "$delayer" ]; then
        say "building $delayer"
        gcc -O2 -Wall -Wextra -o "$delayer.tmp" "$here/nfq_delay.c" -lnetfilter_queue -lnfnetlink \
            || die "gcc could not build nfq_delay.c (libnetfilter-queue-dev installed?)"
        mv -f "$delayer.tmp" "$delayer"
    fi
}

# The iptables variant that works in a fresh namespace here (nft first, then legacy).
pick_iptables() {
    local ns="$1" cand
    for cand in iptables iptables-nft iptables-legacy; do
        command -v "$cand" > /dev/null || continue
        if in_ns "$ns" "$cand" -w -t raw -L PREROUTING -n > /dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

iptables_cmd() { cat "$run_dir/iptables" 2> /dev/null || echo iptables; }

# --- teardown --------------------------------------------------------------------------------

# Stops a delayer from its pid file (only if the pid is really an nfq_delay).
stop_delayer() {
    local name="$1" pidfile="$run_dir/delay-$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2> /dev/null || true)"
    if [ -n "$pid" ] && grep -qs nfq_delay "/proc/$pid/cmdline"; then
        kill -TERM "$pid" 2> /dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.05; done
        if grep -qs nfq_delay "/proc/$pid/cmdline"; then
            kill -KILL "$pid" 2> /dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2> /dev/null || break; sleep 0.05; done
        fi
    fi
    rm -f "$pidfile"
}

# Ends every process still inside a namespace (delayers whose pid file was lost, a coordinator
# or worker someone left running): a namespace lives on, with its veths, while a process holds it.
# Waits up to N × 50 ms for the processes in $pids to end; leaves the survivors in $alive.
wait_gone() {
    local tries="$1" pid
    for _ in $(seq 1 "$tries"); do
        alive=""
        for pid in $pids; do kill -0 "$pid" 2> /dev/null && alive+="$pid "; done
        [ -n "$alive" ] || return 0
        sleep 0.05
    done
    return 1
}

empty_ns() {
    local ns="$1" pids alive
    ns_exists "$ns" || return 0
    pids="$(ip netns pids "$ns" 2> /dev/null | tr '\n' ' ')"
    [ -n "${pids// /}" ] || return 0
    warn "ending processes still in $ns: $pids"
    # shellcheck disable=SC2086
    kill -TERM $pids 2> /dev/null || true
    wait_gone 60 && return 0
    # shellcheck disable=SC2086
    kill -KILL $alive 2> /dev/null || true
    wait_gone 40 || true
}

teardown() {
    local ns ipt
    ipt="$(iptables_cmd)"
    for ns in hub site1 site2 site3; do stop_delayer "$ns"; done
    for ns in "${all_ns[@]}"; do
        ns_exists "$ns" || continue
        empty_ns "$ns"
        in_ns "$ns" "$ipt" -w -t raw -F PREROUTING > /dev/null 2>&1 || true
        ip netns del "$ns" 2> /dev/null || warn "could not delete namespace $ns"
    done
    rm -rf "$run_dir"
}

# What is left after teardown: namespaces, delayer processes. Empty output means clean.
leftovers() {
    local ns pid
    for ns in "${all_ns[@]}"; do ns_exists "$ns" && echo "namespace $ns"; done
    for pid in $(pgrep -x nfq_delay 2> /dev/null || true); do
        [ "$(readlink -f "/proc/$pid/exe" 2> /dev/null)" = "$(readlink -f "$delayer")" ] && echo "delayer pid $pid"
    done
    ip -o link show 2> /dev/null | grep -Eo '(veth-site[0-9]+|veth-hub)@' | sed 's/@$//; s/^/host veth /' || true
}

# --- up --------------------------------------------------------------------------------------

healthy() {
    local ns name pid ipt
    [ -f "$run_dir/up" ] || return 1
    ipt="$(iptables_cmd)"
    for ns in "${all_ns[@]}"; do ns_exists "$ns" || return 1; done
    for name in hub site1 site2 site3; do
        pid="$(cat "$run_dir/delay-$name.pid" 2> /dev/null)" || return 1
        grep -qs nfq_delay "/proc/$pid/cmdline" || return 1
    done
    in_ns "$hub" "$ipt" -w -t raw -S PREROUTING 2> /dev/null | grep -q NFQUEUE || return 1
    for n in "${sites[@]}"; do
        in_ns "$hub" tc qdisc show dev "veth-site$n" 2> /dev/null | grep -q tbf || return 1
        in_ns "cohort-site$n" tc qdisc show dev veth-hub 2> /dev/null | grep -q tbf || return 1
        in_ns "cohort-site$n" "$ipt" -w -t raw -S PREROUTING 2> /dev/null | grep -q NFQUEUE || return 1
    done
}

# tbf at the link rate. burst 64 KiB keeps a TSO/GSO packet whole (hrtimer-driven tbf is exact
# at any burst); limit 1 MiB holds more than the 625 kB bandwidth-delay product of the 50 ms path,
# so a TCP flow's slow start is not cut short by tail drops at the sender's own qdisc.
shape() {
    local ns="$1" dev="$2"
    in_ns "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst 64kb limit 1mb
}

start_delayer() {
    local name="$1" ns="$2" ifpat="$3" ipt pidfile="$run_dir/delay-$1.pid"
    ipt="$(iptables_cmd)"
    rm -f "$pidfile"
    # setsid: the delayer outlives this script and ignores its terminal's Ctrl-C.
    setsid ip netns exec "$ns" "$delayer" --queue 0 --delay-ms "$delay_ms" --batch-us "${COHORT_DELAY_BATCH_US:-200}" --maxlen 16384 \
        --pidfile "$pidfile" --rt 10 < /dev/null > "$run_dir/delay-$name.log" 2>&1 9>&- &
    local pid=$!
    for _ in $(seq 1 100); do
        [ -s "$pidfile" ] && break
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.05
    done
    [ -s "$pidfile" ] || { cat "$run_dir/delay-$name.log" >&2; die "the delayer of $ns did not start"; }
    in_ns "$ns" "$ipt" -w -t raw -A PREROUTING -i "$ifpat" -j NFQUEUE --queue-num 0 --queue-bypass \
        || die "iptables in $ns refused the NFQUEUE rule (is nfnetlink_queue / xt_NFQUEUE in this kernel?)"
}

up() {
    [[ "$delay_ms" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "COHORT_LINK_DELAY_MS must be a number of milliseconds, got '$delay_ms'"
    [[ "$rate" =~ ^[0-9]+([.][0-9]+)?([kmgt]?(bit|bps))$ ]] || die "COHORT_LINK_RATE must be a tc rate such as 100mbit, got '$rate'"
    ensure_tools
    build_delayer
    if healthy && [ "$(cat "$run_dir/up")" = "$rate $delay_ms" ]; then
        say "already up (hub $hub_addr; sites 10.77.1.2, 10.77.2.2, 10.77.3.2; $rate, ${delay_ms} ms each way)"
        return 0
    fi
    if [ -n "$(leftovers)" ] || [ -d "$run_dir" ]; then
        say "replacing what is there (partial, unhealthy, or other link settings)"
        teardown
    fi
    up_done=0
    trap 'if [ "$up_done" -eq 0 ]; then warn "up failed; removing what it built"; teardown; fi' EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$run_dir"

    local ns n ipt
    for ns in "${all_ns[@]}"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2> /dev/null || true
    done
    ipt="$(pick_iptables "$hub")" || die "neither iptables-nft nor iptables-legacy works in a network namespace here"
    echo "$ipt" > "$run_dir/iptables"
    in_ns "$hub" ip addr add "$hub_addr/32" dev lo
    for n in "${sites[@]}"; do
        ip link add "veth-site$n" netns "$hub" type veth peer name veth-hub netns "cohort-site$n"
        in_ns "$hub" ip addr add "10.77.$n.1/24" dev "veth-site$n"
        in_ns "cohort-site$n" ip addr add "10.77.$n.2/24" dev veth-hub
        in_ns "$hub" ip link set "veth-site$n" up
        in_ns "cohort-site$n" ip link set veth-hub up
        in_ns "cohort-site$n" ip route add 10.77.0.0/16 via "10.77.$n.1"
        shape "$hub" "veth-site$n"
        shape "cohort-site$n" veth-hub
    done
    start_delayer hub "$hub" 'veth-site+'
    for n in "${sites[@]}"; do start_delayer "site$n" "cohort-site$n" veth-hub; done
    for n in "${sites[@]}"; do
        in_ns "cohort-site$n" ping -c 1 -W 2 "$hub_addr" > /dev/null \
            || die "site$n cannot reach the hub at $hub_addr"
    done
    echo "$rate $delay_ms" > "$run_dir/up"
    up_done=1
    trap - EXIT INT TERM
    say "up: hub $hub_addr (namespace $hub); site1..3 at 10.77.N.2 (cohort-siteN); $rate each way per link, ${delay_ms} ms each way (NFQUEUE delayers, $ipt)"
}

# --- status and measurements ------------------------------------------------------------------

# avg RTT in ms of hub -> site N (5 pings, 0.2 s apart; -U: user-to-user latency).
rtt_ms() {
    in_ns "$hub" ping -U -c 5 -i 0.2 -W 2 -q "10.77.$1.2" 2> /dev/null \
        | sed -n 's|.*= \([0-9.]*\)/\([0-9.]*\)/\([0-9.]*\)/.*|min \1 / avg \2 / max \3 ms|p'
}

status() {
    local ns n name pid ipt
    if ! ns_exists "$hub" && [ ! -d "$run_dir" ]; then
        say "down (no cohort-* namespaces)"
        return 0
    fi
    ipt="$(iptables_cmd)"
    healthy && say "up and healthy" || say "PARTIAL or unhealthy (run: $0 down; $0 up)"
    for ns in "${all_ns[@]}"; do
        echo "== $ns"
        ns_exists "$ns" || { echo "   (missing)"; continue; }
        in_ns "$ns" ip -br addr | sed 's/^/   /'
        for dev in $(in_ns "$ns" ls /sys/class/net); do
            [ "$dev" = lo ] && continue
            in_ns "$ns" tc qdisc show dev "$dev" | sed "s/^/   qdisc $dev: /"
        done
        in_ns "$ns" "$ipt" -w -t raw -S PREROUTING 2> /dev/null | grep NFQUEUE | sed "s/^/   $ipt: /" || echo "   (no NFQUEUE rule)"
    done
    echo "== delayers"
    for name in hub site1 site2 site3; do
        pid="$(cat "$run_dir/delay-$name.pid" 2> /dev/null || true)"
        if [ -n "$pid" ] && grep -qs nfq_delay "/proc/$pid/cmdline"; then
            # utime+stime (clock ticks) and age -> mean CPU share since start
            cpu_pct="$(awk -v hz="$(getconf CLK_TCK)" -v up="$(cut -d' ' -f1 /proc/uptime)" \
                '{ t = ($14 + $15) / hz; age = up - $22 / hz; printf "%.2f", (age > 0 ? 100 * t / age : 0) }' "/proc/$pid/stat")"
            echo "   $name: pid $pid, running, mean CPU ${cpu_pct}% since start"
        else
            echo "   $name: NOT running"
        fi
    done
    echo "== round trip hub -> site (ping -U)"
    for n in "${sites[@]}"; do
        ns_exists "cohort-site$n" || continue
        echo "   site$n 10.77.$n.2: $(rtt_ms "$n" || true)"
    done
}

# TCP throughput of one link, one direction, with a Python sender and receiver (no iperf needed).
tcp_mbps() {
    local from_ns="$1" to_ns="$2" to_addr="$3" secs="$4" port=5299
    in_ns "$to_ns" python3 - "$to_addr" "$port" > "$run_dir/rx.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
c, _ = s.accept(); buf = bytearray(1 << 20); n = 0; t0 = None
while True:
    r = c.recv_into(buf)
    if not r: break
    if t0 is None: t0 = time.monotonic()
    n += r
dt = time.monotonic() - t0
print(f"{8 * n / dt / 1e6:.1f}")
PY
    local rx=$!
    sleep 0.3
    in_ns "$from_ns" python3 - "$to_addr" "$port" "$secs" <<'PY'
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
data = b"\0" * (1 << 20); end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end: c.sendall(data)
c.close()
PY
    wait "$rx"
    cat "$run_dir/rx.out"
}

delayer_cpu_ticks() {
    local name sum=0 pid
    for name in hub site1 site2 site3; do
        pid="$(cat "$run_dir/delay-$name.pid")"
        sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$sum"
}

measure() {
    healthy || die "the consortium is not up: $0 up"
    local n secs="${1:-5}" t0 t1 c0 c1 hz
    hz="$(getconf CLK_TCK)"
    for n in "${sites[@]}"; do echo "site$n RTT (ping -U): $(rtt_ms "$n")"; done
    for n in "${sites[@]}"; do
        c0="$(delayer_cpu_ticks)"; t0="$(date +%s.%N)"
        up_mbps="$(tcp_mbps "cohort-site$n" "$hub" "$hub_addr" "$secs")"
        down_mbps="$(tcp_mbps "$hub" "cohort-site$n" "10.77.$n.2" "$secs")"
        c1="$(delayer_cpu_ticks)"; t1="$(date +%s.%N)"
        echo "site$n TCP ($secs s each way, one flow): site->hub $up_mbps Mbit/s, hub->site $down_mbps Mbit/s;" \
            "all four delayers together: $(awk -v c="$((c1 - c0))" -v hz="$hz" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / hz / (b - a) }')% of a core"
    done
}

# --- main ------------------------------------------------------------------------------------

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    up) require_root up; take_lock; up ;;
    down)
        require_root down; take_lock
        teardown
        left="$(leftovers)"
        [ -z "$left" ] || die "could not remove: $(echo "$left" | tr '\n' ';')"
        say "down: no cohort-* namespaces, veths, iptables rules or delayers left"
        ;;
    status) require_root status; take_lock; status ;;
    measure) require_root measure; take_lock; measure "$@" ;;
    exec)
        require_root exec
        [ $# -ge 2 ] || die "usage: $0 exec hub|site1|site2|site3 CMD..."
        case "$1" in
            hub) ns="$hub" ;;
            site[1-3]) ns="cohort-$1" ;;
            cohort-hub | cohort-site[1-3]) ns="$1" ;;
            *) die "unknown namespace '$1': hub, site1, site2 or site3" ;;
        esac
        shift
        ns_exists "$ns" || die "namespace $ns does not exist: $0 up"
        exec ip netns exec "$ns" "$@"
        ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
