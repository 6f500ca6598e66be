#!/usr/bin/env bash
# deploy/softroce.sh up [N] | down | status - a local aidos cluster over
# Soft-RoCE (rdma_rxe) on a host whose kernel has it, the nodes on the raw
# verbs transport (--transport verbs).
#
#   up [N]   checks, then in the initial network namespace a bridge aidos-rbr
#            and N (default 2) veth pairs aidos-rK (10.78.0.K, rxe device
#            aidos-rxeK) <-> aidos-rK-b (on the bridge), policy routes so
#            traffic between these local addresses crosses the veths and the
#            bridge (rxe drops what arrives on lo),
#            a coordinator on 127.0.0.1:7790 and node nk bound to rxe device
#            aidos-rxek (AIDOS_RDMA_DEV) with --transport verbs. Prints
#            AIDOS_COORD=127.0.0.1:7790.
#   down     stops what `up` started and removes the rxe devices, rules and
#            veths (only ours: names aidos-r*).
#   status   the checks, the rxe devices (rdma link) and `aidosctl nodes`.
#
# Checks (each one line, OK or the problem and its fix):
#   - rdma_rxe module loadable (modprobe) and the `rdma` tool (iproute2)
#   - MTU: the veths get 9000, so RoCE's path MTU is 4096 (with 1500 it is
#     1024, and UD messages must fit it)
#   - UDP 4791 (RoCE v2) not dropped by iptables/nftables INPUT rules
#   - namespace mode: rxe works in the initial network namespace only on
#     kernels up to 6.1 (its UDP socket and routes live there): refuse to run
#     inside another namespace (use one VM per node there, or tools/test-rxe.sh)
#   - RLIMIT_MEMLOCK: ibv_reg_mr pins memory (unlimited recommended)
#
# Needs root, iproute2 (ip, rdma), kmod, and a build (AIDOS_BUILD, default
# build/). State in AIDOS_RXE_DIR (default /tmp/aidos-softroce).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${AIDOS_BUILD:-$root/build}
DIR=${AIDOS_RXE_DIR:-/tmp/aidos-softroce}
COORD=127.0.0.1:7790
say() { echo "softroce: $*"; }
die() { say "error: $*" >&2; exit 1; }

checks() {   # prints one line per check; returns 1 if one is fatal
	local bad=0
	if [[ $(id -u) != 0 ]]; then say "root: NO (run as root)"; bad=1; fi
	if command -v rdma >/dev/null; then say "rdma tool: OK"; else say "rdma tool: MISSING (apt-get install iproute2)"; bad=1; fi
	if [[ -d /sys/module/rdma_rxe ]] || modprobe rdma_rxe 2>/dev/null; then
		say "rdma_rxe: OK (loaded)"
		modprobe rdma_ucm 2>/dev/null
	else
		say "rdma_rxe: NOT AVAILABLE (this kernel has no rdma_rxe: CONFIG_RDMA_RXE; use make test-rxe, which boots Debian's kernel under QEMU)"
		bad=1
	fi
	if [[ $(readlink /proc/self/ns/net) != "$(readlink /proc/1/ns/net 2>/dev/null)" ]]; then
		say "namespace: NOT the initial network namespace (rxe on kernels <= 6.1 works only there: run on the host or one VM per node)"
		bad=1
	else
		say "namespace: OK (initial network namespace)"
	fi
	if command -v iptables >/dev/null && iptables -S INPUT 2>/dev/null | grep -qE -- '-j (DROP|REJECT)' &&
		! iptables -S INPUT 2>/dev/null | grep -q -- '--dport 4791'; then
		say "UDP 4791: WARNING: INPUT has DROP/REJECT rules and none for RoCE v2 (iptables -I INPUT -p udp --dport 4791 -j ACCEPT)"
	elif command -v nft >/dev/null && nft list ruleset 2>/dev/null | grep -qE 'policy drop' &&
		! nft list ruleset 2>/dev/null | grep -q 4791; then
		say "UDP 4791: WARNING: an nftables drop policy without a rule for RoCE v2 (udp dport 4791 accept)"
	else
		say "UDP 4791: OK (no firewall rule drops RoCE v2)"
	fi
	local ml
	ml=$(ulimit -l)
	[[ $ml == unlimited ]] && say "memlock: OK (unlimited)" ||
		say "memlock: WARNING: $ml KiB (ibv_reg_mr pins agent contexts: ulimit -l unlimited)"
	return $bad
}

up() {
	local n=${1:-2} k
	checks || die "checks failed (above)"
	[[ -x $BUILD/aidos-node && -x $BUILD/aidos-coord ]] || die "no build in $BUILD (run make)"
	[[ -e $DIR/up ]] && die "already up (state in $DIR): run '$0 down' first"
	mkdir -p "$DIR/logs" "$DIR/data"
	touch "$DIR/up"
	for f in /proc/sys/net/ipv4/conf/all/accept_local /proc/sys/net/ipv4/conf/default/accept_local; do echo 1 >"$f"; done
	for f in /proc/sys/net/ipv4/conf/all/rp_filter /proc/sys/net/ipv4/conf/default/rp_filter; do echo 0 >"$f"; done
	# a bridge, and per node a veth pair aidos-rK (rxe, 10.78.0.K) <-> aidos-rK-b
	# (on the bridge): RoCE between nodes crosses real links, never lo
	ip link add aidos-rbr type bridge || die "ip link add aidos-rbr type bridge"
	ip link set aidos-rbr up
	for ((k = 1; k <= n; k++)); do
		local a=aidos-r$k b=aidos-r$k-b
		ip link add "$a" type veth peer name "$b" || die "ip link add $a"
		for i in "$a" "$b"; do
			ip link set "$i" mtu 9000
			echo 1 >"/proc/sys/net/ipv4/conf/$i/accept_local"
			echo 0 >"/proc/sys/net/ipv4/conf/$i/rp_filter"
		done
		echo 1 >"/proc/sys/net/ipv4/conf/$a/arp_ignore"   # answer ARP only for its own address
		ip link set aidos-rbr mtu 9000 2>/dev/null
		ip link set "$b" master aidos-rbr
		ip addr add "10.78.0.$k/24" dev "$a"
		ip link set "$b" up
		ip link set "$a" up
		rdma link add "aidos-rxe$k" type rxe netdev "$a" || die "rdma link add aidos-rxe$k (rdma_rxe needs crc32_generic: modprobe crc32_generic)"
	done
	# Every address here is local, so the kernel would route between them
	# over lo, where rxe drops the packets: node k's traffic to node j
	# leaves through its own veth (table 200+k), its own address stays local.
	for ((k = 1; k <= n; k++)); do
		for ((j = 1; j <= n; j++)); do
			((j == k)) && continue
			ip route add "10.78.0.$j/32" dev "aidos-r$k" src "10.78.0.$k" table $((200 + k))
		done
		ip rule add pref $((200 + k)) iif lo from "10.78.0.$k" lookup $((200 + k))
	done
	if ip rule show pref 0 | grep -q 'lookup local'; then
		ip rule add pref 1000 lookup local
		ip rule del pref 0 lookup local
		touch "$DIR/moved-local-rule"
	fi
	mkdir -p "$DIR/data/coord"
	"$BUILD/aidos-coord" --listen "$COORD" --data-dir "$DIR/data/coord" >"$DIR/logs/coord.out" 2>"$DIR/logs/coord.log" </dev/null &
	echo $! >"$DIR/coord.pid"
	for ((i = 0; i < 100; i++)); do grep -q ready "$DIR/logs/coord.out" && break; sleep 0.1; done
	for ((k = 1; k <= n; k++)); do
		mkdir -p "$DIR/data/n$k"
		AIDOS_RDMA_DEV=aidos-rxe$k "$BUILD/aidos-node" --coord "$COORD" --name "n$k" --data-dir "$DIR/data/n$k" \
			--listen "127.0.0.1:$((7790 + k))" --transport verbs >"$DIR/logs/n$k.out" 2>"$DIR/logs/n$k.log" </dev/null &
		echo $! >"$DIR/n$k.pid"
	done
	for ((k = 1; k <= n; k++)); do
		for ((i = 0; i < 200; i++)); do grep -q ready "$DIR/logs/n$k.out" && break; sleep 0.1; done
		grep -q ready "$DIR/logs/n$k.out" || { tail -n 5 "$DIR/logs/n$k.log" >&2; die "node n$k did not start (logs in $DIR/logs)"; }
		grep ready "$DIR/logs/n$k.out"
	done
	echo "AIDOS_COORD=$COORD"
	say "aidosctl reaches verbs nodes over verbs: run it with AIDOS_RDMA_DEV=aidos-rxe1"
}

down() {
	local p f
	for f in "$DIR"/n*.pid "$DIR"/coord.pid; do
		[[ -f $f ]] || continue
		p=$(cat "$f")
		kill "$p" 2>/dev/null
		rm -f "$f"
	done
	sleep 0.3
	for f in $(rdma link show 2>/dev/null | awk '{print $2}' | grep '^aidos-rxe' | cut -d/ -f1); do
		rdma link delete "$f"
	done
	for p in $(ip rule show | awk -F: '$1 >= 201 && $1 <= 299 {print $1}'); do ip rule del pref "$p"; done
	for p in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^aidos-r[0-9]+$'); do ip link del "$p"; done
	ip link del aidos-rbr 2>/dev/null
	if [[ -f $DIR/moved-local-rule ]]; then
		ip rule add pref 0 lookup local 2>/dev/null
		ip rule del pref 1000 lookup local 2>/dev/null
	fi
	rm -rf "$DIR"
	say "down"
}

status() {
	checks
	rdma link show 2>/dev/null | grep aidos-rxe || say "no aidos rxe devices"
	[[ -x $BUILD/aidosctl ]] && timeout 10 "$BUILD/aidosctl" --coord "$COORD" nodes 2>&1
}

case ${1:-} in
up) shift; up "$@" ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up [N] | down | status" >&2; exit 2 ;;
esac
