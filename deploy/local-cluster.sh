#!/usr/bin/env bash
# deploy/local-cluster.sh - an aidos cluster on one machine (docs/cluster.md,
# "Local cluster").
#
#   deploy/local-cluster.sh up N     coordinator + N nodes; last line AIDOS_COORD=<addr>
#   deploy/local-cluster.sh down     stop everything, remove namespaces, veths, bridge
#   deploy/local-cluster.sh status   what runs, what answers
#
# As root: a bridge aidosbr0 with 198.18.77.1/24 (RFC 2544 benchmark range:
# it cannot collide with a real network) in the initial namespace, the
# coordinator on 198.18.77.1:7700, and per node K a network namespace
# aidos-nK joined to the bridge by a veth pair (aidos-hK on the bridge,
# veth0 inside, 198.18.77.(10+K)/24), the node run as
#   ip netns exec aidos-nK unshare --ipc env UCX_TLS=tcp aidos-node ...
# so UCX really crosses the veth links over TCP (namespaces that share an
# IPC namespace would otherwise pick sysv+cma: /work/shared/notes).
# Without root: the same processes on 127.0.0.1 with distinct ports, and it
# says so.
#
# Environment: AIDOS_CLUSTER_DIR (default /tmp/aidos-cluster: logs/, data/,
# pids/), AIDOS_BUILD (default build: the binaries), AIDOS_READY_TIMEOUT
# (seconds to wait for each `ready` line, default 30), AIDOS_NODE_ARGS
# (extra aidos-node options), AIDOS_COORD_ARGS (extra aidos-coord options),
# AIDOS_CPU_PIN=1 (node K runs on CPU (K-1) mod the CPUs online, with
# taskset, so a node saturated with work leaves the others' CPUs free: the
# rebalancing test needs that on a small machine).
set -uo pipefail

DIR=${AIDOS_CLUSTER_DIR:-/tmp/aidos-cluster}
BUILD=${AIDOS_BUILD:-build}
TIMEOUT=${AIDOS_READY_TIMEOUT:-30}
BR=aidosbr0
NET=198.18.77
COORD_PORT=7700
NODE_PORT=7800
MAX_NODES=200

say() { printf '%s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

usage() {
	cat <<EOF
usage: deploy/local-cluster.sh up N | down | status

  up N     start a coordinator and N nodes (1..$MAX_NODES); as root each node in its own
           network namespace on bridge $BR ($NET.1/24), UCX over TCP across veth
           links; without root plain processes on 127.0.0.1. Waits for every
           'ready' line (AIDOS_READY_TIMEOUT=$TIMEOUT s each) and prints
           AIDOS_COORD=<addr> last.
  down     stop every process (pid files), remove the namespaces, veths and the
           bridge; safe after a partial 'up' and when nothing runs.
  status   mode, processes, namespaces, and 'aidosctl nodes' when it answers.

Logs and data: \$AIDOS_CLUSTER_DIR (now $DIR). Binaries: \$AIDOS_BUILD (now $BUILD).
EOF
}

is_root() { [[ $(id -u) == 0 ]]; }

# Can this shell create network namespaces and bridges?
can_netns() {
	is_root || return 1
	command -v ip >/dev/null && command -v unshare >/dev/null || return 1
	local probe=aidos-probe-$$
	ip netns add "$probe" 2>/dev/null || return 1
	ip netns del "$probe" 2>/dev/null
	return 0
}

# Running (a zombie waiting for its parent to reap it counts as gone).
alive() {
	[[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
	[[ $st != Z && -n $st ]]
}

# pid file -> pid, if it names one of our processes still running.
pid_of() {
	local f=$1 pid
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	# guard against a reused pid: it must be an aidos binary
	grep -qa aidos "/proc/$pid/cmdline" 2>/dev/null || return 1
	printf '%s' "$pid"
}

# Waits until $out holds a ready line of $what, or the process dies, or
# the timeout passes; on failure prints the log's tail and returns 1.
wait_ready() {
	local what=$1 pid=$2 out=$3 log=$4 deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS <= deadline)); do
		if grep -q "^$what ready" "$out" 2>/dev/null; then
			grep "^$what ready" "$out" | head -n 1
			return 0
		fi
		if ! alive "$pid"; then
			say "local-cluster: $what (pid $pid) exited before it was ready; last lines of $log:" >&2
			tail -n 20 "$log" 2>/dev/null | sed 's/^/  | /' >&2
			return 1
		fi
		sleep 0.05
	done
	say "local-cluster: no 'ready' line from $what (pid $pid) within ${TIMEOUT} s; last lines of $log:" >&2
	tail -n 20 "$log" 2>/dev/null | sed 's/^/  | /' >&2
	return 1
}

check_bins() {
	local b
	for b in aidos-coord aidos-node; do
		[[ -x $BUILD/$b ]] || die "$BUILD/$b not found or not executable (run make, or set AIDOS_BUILD)"
	done
}

cmd_up() {
	local n=${1:-}
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAX_NODES)); then
		die "up: want a node count 1..$MAX_NODES, got '${n}'"
	fi
	check_bins
	BUILD=$(cd "$BUILD" && pwd)
	if [[ -d $DIR/pids ]]; then
		local f
		for f in "$DIR"/pids/*.pid; do
			[[ -e $f ]] || continue
			pid_of "$f" >/dev/null && die "a cluster is already up (see '$0 status'); run '$0 down' first"
		done
	fi
	is_root && ip link show "$BR" >/dev/null 2>&1 &&
		die "bridge $BR exists from an earlier run; run '$0 down' first"

	rm -rf "$DIR/logs" "$DIR/data" "$DIR/pids" "$DIR/mode" "$DIR/coord" "$DIR/iptables"
	mkdir -p "$DIR/logs" "$DIR/data" "$DIR/pids" || die "cannot create $DIR"

	local mode coord_host
	if can_netns; then
		mode=netns
		coord_host=$NET.1
	else
		mode=local
		coord_host=127.0.0.1
		if is_root; then
			say "local-cluster: cannot create network namespaces here; running $n nodes as processes on 127.0.0.1 instead"
		else
			say "local-cluster: not root: running $n nodes as processes on 127.0.0.1 (no namespaces, no bridge)"
		fi
	fi
	echo "$mode" >"$DIR/mode"
	local coord=$coord_host:$COORD_PORT
	echo "$coord" >"$DIR/coord"

	if [[ $mode == netns ]]; then
		ip link add "$BR" type bridge || die "cannot create bridge $BR"
		ip addr add "$NET.1/24" dev "$BR" || die "cannot address $BR"
		ip link set "$BR" up || die "cannot bring $BR up"
		# With br_netfilter loaded, bridged frames go through iptables'
		# FORWARD chain, whose policy may be DROP (Docker sets that).
		if [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null) == 1 ]] &&
			command -v iptables >/dev/null; then
			if iptables -I FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; then
				echo 1 >"$DIR/iptables"
				say "local-cluster: br_netfilter is on: allowed forwarding on $BR in iptables (undone by down)"
			fi
		fi
		local k
		for ((k = 1; k <= n; k++)); do
			local ns=aidos-n$k host=aidos-h$k
			ip netns add "$ns" || die "cannot create namespace $ns (run '$0 down' to clean up)"
			ip link add "$host" type veth peer name veth0 netns "$ns" ||
				die "cannot create veth $host (run '$0 down' to clean up)"
			ip link set "$host" master "$BR" up || die "cannot attach $host to $BR"
			ip -n "$ns" addr add "$NET.$((10 + k))/24" dev veth0 || die "cannot address veth0 in $ns"
			ip -n "$ns" link set veth0 up || die "cannot bring veth0 up in $ns"
			ip -n "$ns" link set lo up || die "cannot bring lo up in $ns"
		done
	fi

	# The coordinator (initial namespace: on the bridge address).
	mkdir -p "$DIR/data/coord"
	# shellcheck disable=SC2086
	"$BUILD/aidos-coord" --listen "$coord" --data-dir "$DIR/data/coord" ${AIDOS_COORD_ARGS:-} \
		>"$DIR/logs/coord.out" 2>"$DIR/logs/coord.log" </dev/null &
	local cpid=$!
	echo "$cpid" >"$DIR/pids/coord.pid"
	wait_ready aidos-coord "$cpid" "$DIR/logs/coord.out" "$DIR/logs/coord.log" ||
		die "the coordinator did not come up (run '$0 down' to clean up)"

	# The nodes, all started at once, then waited for.
	local k pids=() ncpu pin=()
	ncpu=$(nproc 2>/dev/null || echo 1)
	for ((k = 1; k <= n; k++)); do
		local name=n$k out=$DIR/logs/n$k.out log=$DIR/logs/n$k.log
		mkdir -p "$DIR/data/$name"
		pin=()
		if [[ ${AIDOS_CPU_PIN:-0} == 1 ]] && command -v taskset >/dev/null; then
			pin=(taskset -c $(((k - 1) % ncpu)))   # taskset execs: $! stays the node's pid
		fi
		if [[ $mode == netns ]]; then
			# ip netns exec, unshare (no --fork) and env all exec: $! is
			# the node's own pid.
			# shellcheck disable=SC2086
			ip netns exec "aidos-n$k" unshare --ipc env UCX_TLS=tcp "${pin[@]}" "$BUILD/aidos-node" \
				--coord "$coord" --name "$name" --data-dir "$DIR/data/$name" \
				--listen "$NET.$((10 + k)):$NODE_PORT" --transport tcp ${AIDOS_NODE_ARGS:-} \
				>"$out" 2>"$log" </dev/null &
		else
			# shellcheck disable=SC2086
			env UCX_TLS=tcp "${pin[@]}" "$BUILD/aidos-node" --coord "$coord" --name "$name" \
				--data-dir "$DIR/data/$name" --listen "127.0.0.1:$((NODE_PORT + k))" --transport tcp \
				${AIDOS_NODE_ARGS:-} >"$out" 2>"$log" </dev/null &
		fi
		pids[k]=$!
		echo "${pids[k]}" >"$DIR/pids/$name.pid"
	done
	local failed=0
	for ((k = 1; k <= n; k++)); do
		wait_ready aidos-node "${pids[k]}" "$DIR/logs/n$k.out" "$DIR/logs/n$k.log" || failed=1
	done
	((failed)) && die "some nodes did not come up (logs in $DIR/logs; run '$0 down' to clean up)"
	if [[ $mode == netns ]]; then
		say "local-cluster: $n nodes in namespaces aidos-n1..aidos-n$n on $BR ($NET.0/24), UCX over TCP, logs in $DIR/logs"
	else
		say "local-cluster: $n nodes on 127.0.0.1, UCX over TCP, logs in $DIR/logs"
	fi
	say "AIDOS_COORD=$coord"
}

# Stops the process in pid file f: SIGTERM, up to 5 s, then SIGKILL.
stop_pidfile() {
	local f=$1 pid i
	pid=$(pid_of "$f") || { rm -f "$f"; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.05
	done
	if alive "$pid"; then
		say "local-cluster: pid $pid ($(basename "$f" .pid)) ignored SIGTERM for 5 s; killing it"
		kill -KILL "$pid" 2>/dev/null
	fi
	rm -f "$f"
}

cmd_down() {
	local f stopped=0
	if [[ -d $DIR/pids ]]; then
		# nodes first (they stop heartbeating), the coordinator last
		for f in "$DIR"/pids/n*.pid; do
			[[ -e $f ]] || continue
			stop_pidfile "$f" &
			stopped=$((stopped + 1))
		done
		wait
		[[ -e $DIR/pids/coord.pid ]] && stop_pidfile "$DIR/pids/coord.pid" && stopped=$((stopped + 1))
	fi
	if is_root && command -v ip >/dev/null; then
		# Our processes are gone; a namespace that still runs something
		# belongs to a cluster started from another AIDOS_CLUSTER_DIR:
		# leave it (and the bridge it hangs on) alone.
		local ns busy=0
		for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^aidos-n[0-9]+$'); do
			if [[ -n $(ip netns pids "$ns" 2>/dev/null) ]]; then
				say "local-cluster: namespace $ns runs processes of another cluster; left alone"
				busy=1
				continue
			fi
			ip netns del "$ns" 2>/dev/null   # takes its end of the veth pair with it
		done
		local l
		for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^aidos-h[0-9]+$'); do
			# a host end whose namespace is gone (or never got one)
			ip link show "$l" 2>/dev/null | grep -q 'link-netns' && ((busy)) && continue
			ip link del "$l" 2>/dev/null
		done
		if [[ -f $DIR/iptables ]]; then
			iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null
			rm -f "$DIR/iptables"
		fi
		if ((busy)); then
			say "local-cluster: bridge $BR still serves another cluster; left alone"
		elif ip link show "$BR" >/dev/null 2>&1; then
			ip link del "$BR" 2>/dev/null
		fi
	fi
	rm -f "$DIR/mode" "$DIR/coord"
	say "local-cluster: down ($stopped processes stopped; logs kept in $DIR/logs)"
}

cmd_status() {
	local mode coord f up=0 total=0
	mode=$(cat "$DIR/mode" 2>/dev/null || echo none)
	coord=$(cat "$DIR/coord" 2>/dev/null || echo -)
	say "mode: $mode   coordinator: $coord   dir: $DIR"
	if [[ -d $DIR/pids ]]; then
		for f in "$DIR"/pids/coord.pid "$DIR"/pids/n*.pid; do
			[[ -e $f ]] || continue
			local name pid
			name=$(basename "$f" .pid)
			total=$((total + 1))
			if pid=$(pid_of "$f"); then
				up=$((up + 1))
				say "  $name: running (pid $pid)"
			else
				say "  $name: NOT running (pid file $(<"$f")); log: $DIR/logs/$name.log"
			fi
		done
	fi
	if is_root && command -v ip >/dev/null; then
		local nss
		nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^aidos-n[0-9]+$' | tr '\n' ' ')
		say "namespaces: ${nss:-none}"
		if ip link show "$BR" >/dev/null 2>&1; then
			say "bridge: $BR $(ip -o -4 addr show dev "$BR" | awk '{print $4}')"
		else
			say "bridge: none"
		fi
	fi
	if ((total == 0)); then
		say "not up"
		return 3
	fi
	if [[ -x $BUILD/aidosctl && $coord != - ]] && pid_of "$DIR/pids/coord.pid" >/dev/null; then
		"$BUILD/aidosctl" --coord "$coord" nodes || true
	fi
	say "$up of $total processes running"
	((up == total))
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
