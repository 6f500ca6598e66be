#!/usr/bin/env bash
# bench/ucx_put.sh [BUILD_DIR] - UCX put bandwidth between two processes in
# two network namespaces joined by a veth pair: aidos's transport
# (bench/ucx_put.c over transport/ucx.c) and `ucx_perftest -t ucp_put_bw` on
# the same pair, in the same run.
#
# Each side runs under `ip netns exec NS unshare --ipc`, so sysv/posix
# shared memory cannot join them (two network namespaces sharing one IPC
# namespace still get sysv+cma from UCX), and UCX_TLS is pinned (default
# tcp; AIDOS_BENCH_TLS overrides, e.g. "all" to see what UCX picks) with
# UCX_NET_DEVICES on the veth. The veth's byte counters are recorded, as
# evidence that the bytes crossed it.
#
# Writes bench/results/ucx-put-latest.json and .md and prints the table.
# Needs root (ip netns), iproute2, util-linux unshare, ucx_perftest; exits
# 77 (skipped) without them. Namespaces are removed on exit, whatever happens.
# Env: AIDOS_BENCH_BYTES (bytes per size, default 128 MiB; iterations are
# BYTES/size clamped to [AIDOS_BENCH_MIN_ITERS=100, AIDOS_BENCH_MAX_ITERS=10000]).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
cd "$root"
[[ -d $build ]] && build=$(cd "$build" && pwd)

if [[ $EUID -ne 0 ]]; then echo "ucx_put.sh: needs root for ip netns; skipped"; exit 77; fi
for t in ip unshare ucx_perftest "${CC:-cc}"; do
	command -v "$t" >/dev/null || { echo "ucx_put.sh: $t not found; skipped"; exit 77; }
done
[[ -f $build/libaidos.a ]] || { echo "ucx_put.sh: $build/libaidos.a missing: run make"; exit 1; }

tls=${AIDOS_BENCH_TLS:-tcp}
bytes=${AIDOS_BENCH_BYTES:-134217728}
min_it=${AIDOS_BENCH_MIN_ITERS:-100}
max_it=${AIDOS_BENCH_MAX_ITERS:-10000}
sizes=(4096 16384 65536 262144 1048576 4194304)
max=${sizes[-1]}

bin=$build/bench/ucx_put   # built by make
mkdir -p bench/results
[[ -x $bin ]] || { echo "bench/ucx_put.sh: $bin is missing: run make" >&2; exit 1; }

id=$$
nsa=aidos-put-a-$id nsb=aidos-put-b-$id
va=apa$id vb=apb$id          # interface names: at most 15 characters
ipa=10.200.77.1 ipb=10.200.77.2
port=$((20000 + id % 20000))
tmp=$(mktemp -d)
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	ip netns del "$nsa" 2>/dev/null || true  # takes the veth pair with it
	ip netns del "$nsb" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ip netns add "$nsa"
ip netns add "$nsb"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$nsa"
ip link set "$vb" netns "$nsb"
ip -n "$nsa" addr add "$ipa/24" dev "$va"
ip -n "$nsb" addr add "$ipb/24" dev "$vb"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "$va" up
ip -n "$nsb" link set "$vb" up

# command prefixes, not functions: a background "${in_a[@]}" cmd & execs
# down to cmd, so $! is the benchmark process itself and cleanup can kill it
in_a=(ip netns exec "$nsa" unshare --ipc)
in_b=(ip netns exec "$nsb" unshare --ipc)
veth_bytes() { ip netns exec "$nsa" cat "/sys/class/net/$va/statistics/rx_bytes"; }

iters() { local n=$((bytes / $1)); ((n < min_it)) && n=$min_it; ((n > max_it)) && n=$max_it; echo $n; }
csv=$(IFS=,; echo "${sizes[*]}")

# ---- aidos: server (target) in A, client (initiator, puts) in B ----
rx0=$(veth_bytes)
"${in_a[@]}" "$bin" server "$ipa:$port" --tls "$tls" --dev "$va" --max "$max" &
spid=$!
pids+=("$spid")
# (children in the background and `wait`: a trapped signal interrupts wait
# at once, where bash would first let a foreground child finish)
"${in_b[@]}" "$bin" client "$ipa:$port" --tls "$tls" --dev "$vb" --sizes "$csv" --bytes "$bytes" \
	--min-iters "$min_it" --max-iters "$max_it" --out "$tmp/aidos.tsv" >/dev/null &
pids+=($!)
wait "${pids[-1]}"
wait "$spid"
rx1=$(veth_bytes)
grep -q '^checksum	ok' "$tmp/aidos.tsv" || { echo "ucx_put.sh: aidos checksum failed"; exit 1; }

# ---- ucx_perftest on the same pair ----
rx2=$(veth_bytes)
for s in "${sizes[@]}"; do
	it=$(iters "$s")
	port=$((port + 1))
	"${in_a[@]}" env UCX_TLS="$tls" UCX_NET_DEVICES="$va" ucx_perftest -p "$port" >/dev/null 2>&1 &
	ppid_srv=$!
	pids+=($!)
	ok=0
	for try in 1 2 3 4 5 6 7 8 9 10; do
		"${in_b[@]}" env UCX_TLS="$tls" UCX_NET_DEVICES="$vb" ucx_perftest "$ipa" -p "$port" \
			-t ucp_put_bw -s "$s" -n "$it" -w $((it / 10 + 1)) -v >"$tmp/pt-$s.txt" 2>&1 &
		pids+=($!)
		if wait "${pids[-1]}"; then
			ok=1
			break
		fi
		sleep 0.3  # the server was not listening yet
	done
	((ok)) || { echo "ucx_put.sh: ucx_perftest failed at $s"; tail -5 "$tmp/pt-$s.txt"; exit 1; }
	wait "$ppid_srv" || true
done
rx3=$(veth_bytes)

# ---- results ----
IFS=$'\t' read -r _ name reason < <(grep '^describe' "$tmp/aidos.tsv")
lanes=$(grep '^lanes' "$tmp/aidos.tsv" | cut -f2)
esc() { local s=${1//\\/\\\\}; printf '%s' "${s//\"/\\\"}"; }
ucxver=$(ucx_info -v 2>/dev/null | sed -n 's/^# Version //p' | head -1)
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load=$(cut -d' ' -f1-3 /proc/loadavg)
cpus=$(nproc)

rows=() md=()
md+=("| size | iterations | aidos put GB/s | aidos us/put | ucx_perftest put_bw GB/s | ucx_perftest us/iter | aidos / perftest |")
md+=("|---:|---:|---:|---:|---:|---:|---:|")
for s in "${sizes[@]}"; do
	read -r it secs < <(awk -F'\t' -v s="$s" '$1 == s { print $2, $3 }' "$tmp/aidos.tsv")
	# perftest -v: iterations,p50_lat,avg_lat,overall_lat,avg_bw,overall_bw(MB/s = 2^20 B/s),...
	IFS=, read -r pit _ plat _ _ pbw _ < <(grep -E '^ *[0-9]+,' "$tmp/pt-$s.txt" | tail -1)
	row=$(awk -v s="$s" -v it="$it" -v t="$secs" -v pbw="$pbw" -v plat="$plat" -v pit="$pit" 'BEGIN {
		a = s * it / t / 1e9; p = pbw * 1048576 / 1e9;
		printf "%d %d %.4f %.2f %d %.4f %.2f %.2f", s, it, a, t / it * 1e6, pit, p, plat, a / p }')
	read -r _ _ a aus _ p pus ratio <<<"$row"
	rows+=("    {\"size\": $s, \"aidos\": {\"iterations\": $it, \"seconds\": $secs, \"gbps\": $a, \"us_per_put\": $aus}, \"ucx_perftest\": {\"iterations\": $pit, \"gbps\": $p, \"us_per_iter\": $pus}, \"ratio\": $ratio}")
	md+=("| $s | $it | $a | $aus | $p | $pus | $ratio |")
done

{
	echo "{"
	echo "  \"bench\": \"ucx_put\","
	echo "  \"date\": \"$now\","
	echo "  \"host\": {\"cpus\": $cpus, \"loadavg\": \"$load\", \"kernel\": \"$(uname -r)\", \"ucx\": \"$ucxver\"},"
	echo "  \"setup\": \"two network namespaces + veth ($ipa <-> $ipb), each side under unshare --ipc; UCX_TLS=$tls, UCX_NET_DEVICES=<veth>\","
	echo "  \"aidos_transport\": {\"name\": \"$(esc "$name")\", \"reason\": \"$(esc "$reason")\", \"lanes\": \"$(esc "$lanes")\"},"
	echo "  \"aidos_put\": \"blocking xport_put: put + flush, one op in flight; 10% warm-up\","
	echo "  \"ucx_perftest\": \"ucx_perftest -t ucp_put_bw -s SIZE -n ITERS -w ITERS/10 (puts in flight, flush at the end)\","
	echo "  \"veth_rx_bytes\": {\"aidos\": $((rx1 - rx0)), \"ucx_perftest\": $((rx3 - rx2))},"
	echo "  \"results\": ["
	for i in "${!rows[@]}"; do
		sep=,; ((i == ${#rows[@]} - 1)) && sep=
		echo "${rows[$i]}$sep"
	done
	echo "  ]"
	echo "}"
} >bench/results/ucx-put-latest.json

{
	echo "# UCX put bandwidth across a veth pair ($now)"
	echo
	echo "Two network namespaces, each side under \`unshare --ipc\`, UCX_TLS=$tls on the veth; $cpus CPUs, load average $load."
	echo "aidos transport: \`$name\` (lanes $lanes) -- $reason"
	echo "Bytes received by the target's veth: aidos $((rx1 - rx0)), ucx_perftest $((rx3 - rx2))."
	echo "aidos: blocking xport_put (put + flush: one round trip per call); ucx_perftest: puts kept in flight."
	echo
	printf '%s\n' "${md[@]}"
} >bench/results/ucx-put-latest.md

cat bench/results/ucx-put-latest.md
