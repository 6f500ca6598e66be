#!/usr/bin/env bash
# tools/test-rxe.sh BUILD_DIR - `make test-rxe`: the verbs transport over
# Soft-RoCE (rdma_rxe) on a machine whose own kernel has no RDMA.
#
# 1. fetches Debian's kernel (linux-image-amd64, 6.1) and the RDMA user
#    space with `apt-get download` into ~/.cache/aidos/rxe/debs (once),
# 2. builds a base initramfs: busybox-static, the rxe modules and their
#    dependencies in load order, rdma-core (libibverbs + the rxe provider,
#    librdmacm, ibverbs-utils, perftest), UCX and iproute2, each binary with
#    the shared libraries it needs (ldd, preferring the extracted packages);
#    cached as ~/.cache/aidos/rxe/base-<hash>.cpio,
# 3. appends this build's binaries (aidos-node, aidos-coord, aidosctl, aidos,
#    bench/verbs_put, tests/test_verbs), their libraries, the Silero VAD
#    model, inputs made here with numpy, and tools/rxe/inside.sh,
# 4. boots it under QEMU (KVM when the CPU has vmx/svm and /dev/kvm works,
#    else TCG), where tools/rxe/init wires rxe0/rxe1 over a veth pair and
#    tools/rxe/inside.sh runs the tests and benchmarks; the serial console
#    comes back here,
# 5. prints the checks and the comparison table, writes
#    bench/results/rxe-latest.json, and ends with `N passed, N failed, N skipped`.
#
# Functional checks (test_verbs, cluster up, remote inference equal to aidos
# run, stateful migration identical, error paths, softroce.sh) are PASS/FAIL
# assertions; the timing targets are reported (met / NOT met), never fail.
#
# Exit: 0 all passed, 1 a failure, 77 skipped (no qemu or cpio, or no
# packages and no network). The whole run is bounded by AIDOS_RXE_TOTAL
# (s, default 900 = 15 min): the package fetch by 300 s, the VM by what is
# left (at most AIDOS_RXE_TIMEOUT, default 780), after which it is killed.
# Env: AIDOS_CACHE (default ~/.cache/aidos), AIDOS_RXE_ACCEL (kvm|tcg),
# AIDOS_RXE_ROUNDS (interleaved benchmark rounds, default 7).
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tools/test-rxe.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
C=$CACHE/rxe
PY=/usr/bin/python3
t_start=$SECONDS
log() { echo "test-rxe: $*"; }
skip_all() { log "SKIP: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 77; }
fail_all() { log "FAIL: $*"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

command -v qemu-system-x86_64 >/dev/null || skip_all "qemu-system-x86_64 missing (make deps installs qemu-system-x86)"
command -v cpio >/dev/null || skip_all "cpio missing (make deps)"
for b in aidos aidosctl aidos-node aidos-coord bench/verbs_put tests/test_verbs; do
	[[ -x $build/$b ]] || fail_all "$build/$b missing: run make"
done

work=$(mktemp -d /tmp/aidos-rxe.XXXXXX)
qpid=""
cleanup() {
	[[ -n $qpid ]] && kill "$qpid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. packages ----
PKGS=(busybox-static libibverbs1 librdmacm1 ibverbs-providers ibverbs-utils rdmacm-utils perftest libucx0
      ucx-utils iproute2 libmnl0 libelf1 libbpf1 libcap2 libxtables12 libbsd0 libmd0 libnl-3-200
      libnl-route-3-200 libnuma1 libpci3)
mkdir -p "$C/debs"
kpkg=$(ls "$C"/debs/linux-image-6.1*-amd64_*.deb 2>/dev/null | head -n 1)
if [[ -z $kpkg ]] || [[ $(cat "$C/debs/.complete" 2>/dev/null) != "${PKGS[*]}" ]]; then
	kname=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-6\.1[^ ]*-amd64\)$/\1/p' | head -n 1)
	[[ -n $kname ]] || skip_all "apt-cache knows no linux-image-amd64 (6.1) here: cannot fetch the kernel"
	log "fetching $kname and ${#PKGS[@]} packages with apt-get download into $C/debs"
	(cd "$C/debs" && timeout -k 10 300 apt-get download "$kname" "${PKGS[@]}" >"$work/apt.log" 2>&1) ||
		{ tail -n 5 "$work/apt.log"; skip_all "apt-get download failed or took over 300 s (no network?)"; }
	echo "${PKGS[*]}" >"$C/debs/.complete"
	kpkg=$(ls "$C"/debs/linux-image-6.1*-amd64_*.deb | head -n 1)
fi

# ---- 2. base initramfs (cached by the package set and this recipe) ----
BASE_RECIPE=4   # bump when the base recipe below changes
key=$( (ls "$C/debs"; echo "$BASE_RECIPE"; cat "$root/tools/rxe/init") | sha256sum | cut -c1-16)
base=$C/base-$key.cpio
R=$C/root
LIBPATH=$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu/libibverbs

# copy_elf SRC DEST_ROOT DEST_PATH: the file and every library ldd resolves
# (from the extracted packages first, else the host's identical Debian 12).
copy_elf() {
	local src=$1 dr=$2 dst=$3
	mkdir -p "$dr/$(dirname "$dst")"
	cp -L "$src" "$dr/$dst"
	LD_LIBRARY_PATH=$LIBPATH ldd "$src" 2>/dev/null | awk '/=> \// {print $3} /^\t\/lib64/ {print $1}' |
		while read -r lib; do
			local d=${lib#"$R"}
			[[ -e $dr/$d ]] && continue
			mkdir -p "$dr/$(dirname "$d")"
			cp -L "$lib" "$dr/$d"
		done
}

if [[ ! -f $base ]]; then
	log "building the base initramfs (kernel $(basename "$kpkg"))"
	rm -rf "$R" "$C"/base-*.cpio "$C"/vmlinuz
	mkdir -p "$R"
	for d in "$C"/debs/*.deb; do dpkg -x "$d" "$R" || fail_all "dpkg -x $d"; done
	kver=$(ls "$R/lib/modules" | head -n 1)
	cp "$R/boot/vmlinuz-$kver" "$C/vmlinuz"
	B=$work/base
	mkdir -p "$B"/{bin,sbin,usr/bin,usr/sbin,etc,rxe,lib64,proc,sys,dev,tmp}
	cp "$R/bin/busybox" "$B/bin/busybox"
	cp "$root/tools/rxe/init" "$B/init"
	chmod +x "$B/init"
	# modules: what rxe needs, each after its dependencies (modinfo's
	# depends= read from the .ko; crc32_generic is needed but not listed)
	M=$R/lib/modules/$kver
	declare -A seen=()
	order=()
	modpath() { find "$M" -name "$1.ko" | head -n 1; }
	addmod() {
		local name=${1//-/_} p deps
		[[ -n ${seen[$name]:-} ]] && return
		seen[$name]=1
		p=$(modpath "$name")
		[[ -n $p ]] || p=$(modpath "${1//_/-}")
		[[ -n $p ]] || { log "module $1 not found (built in?)"; return; }
		deps=$(tr '\0' '\n' <"$p" | sed -n 's/^depends=//p' | head -n 1)
		for d in ${deps//,/ }; do addmod "$d"; done
		order+=("${p#"$M"/}")
		mkdir -p "$B/lib/modules/$kver/$(dirname "${p#"$M"/}")"
		cp "$p" "$B/lib/modules/$kver/${p#"$M"/}"
	}
	for m in veth bridge crc32_generic ib_core ib_uverbs udp_tunnel ip6_udp_tunnel rdma_rxe ib_cm iw_cm configfs \
		rdma_cm rdma_ucm; do
		addmod "$m"
	done
	printf '%s\n' "${order[@]}" >"$B/rxe/modules.list"
	# user space
	for b in usr/bin/ib_write_lat usr/bin/ib_write_bw usr/bin/ib_read_lat usr/bin/ib_read_bw usr/bin/ibv_devinfo \
		usr/bin/ibv_rc_pingpong usr/bin/rping usr/bin/ucx_perftest usr/bin/ucx_info bin/ip usr/bin/rdma; do
		[[ -e $R/$b ]] || { log "$b missing from the packages"; continue; }
		copy_elf "$R/$b" "$B" "/$b"
	done
	for so in "$R"/usr/lib/x86_64-linux-gnu/libibverbs/*.so "$R"/usr/lib/x86_64-linux-gnu/ucx/*.so.0; do
		copy_elf "$so" "$B" "${so#"$R"}"
	done
	cp -r "$R/etc/libibverbs.d" "$B/etc/"
	cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$B/lib/x86_64-linux-gnu/" 2>/dev/null ||
		{ mkdir -p "$B/lib/x86_64-linux-gnu"; cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$B/lib/x86_64-linux-gnu/"; }
	copy_elf /bin/bash "$B" /bin/bash
	echo "root:x:0:0:root:/root:/bin/bash" >"$B/etc/passwd"
	(cd "$B" && find . | cpio -o -H newc --quiet) >"$base.tmp" && mv "$base.tmp" "$base"
	log "base initramfs: $(du -h "$base" | cut -f1) in $((SECONDS - t_start)) s"
fi

# ---- 3. this build ----
O=$work/ov
mkdir -p "$O/aidos/build/bench" "$O/aidos/build/tests" "$O/aidos/tools/rxe" "$O/aidos/data"
for b in aidos aidosctl aidos-node aidos-coord bench/verbs_put tests/test_verbs; do
	copy_elf "$build/$b" "$O" "/aidos/build/$b"
done
cp "$root/tools/rxe/inside.sh" "$O/aidos/tools/rxe/"
mkdir -p "$O/aidos/deploy"
cp "$root/deploy/softroce.sh" "$O/aidos/deploy/"
VAD=$CACHE/models/vad-web/silero_vad_v5.onnx
[[ -f $VAD ]] && cp "$VAD" "$O/aidos/data/"
if [[ -x $PY ]] && "$PY" -c 'import numpy' 2>/dev/null; then
	"$PY" "$root/tests/tools/vad_chunks.py" "$O/aidos/data"
	if "$PY" -c 'import onnx' 2>/dev/null; then
		for sz in 65536 1048576 4194304 8388608; do
			"$PY" "$root/tests/tools/state_model.py" "$O/aidos/data/state_$sz.onnx" "$sz" 2>/dev/null
		done
	fi
fi
(cd "$O" && find . | cpio -o -H newc --quiet) >"$work/ov.cpio"
cat "$base" "$work/ov.cpio" >"$work/initrd"
log "initramfs $(du -h "$work/initrd" | cut -f1) ready after $((SECONDS - t_start)) s"

# ---- 4. boot ----
accel=${AIDOS_RXE_ACCEL:-}
if [[ -z $accel ]]; then
	accel=tcg
	grep -qE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]] && accel=kvm
fi
if [[ $accel == kvm ]]; then
	qaccel=(-accel kvm -cpu host)
else
	qaccel=(-accel tcg,thread=multi -cpu max)
fi
vm_t=${AIDOS_RXE_TIMEOUT:-780}
left=$((${AIDOS_RXE_TOTAL:-900} - (SECONDS - t_start) - 20))   # 20 s for the results
((left < vm_t)) && vm_t=$left
((vm_t >= 180)) || fail_all "only ${vm_t} s left of the ${AIDOS_RXE_TOTAL:-900} s bound for the VM (the fetch or the initramfs took $((SECONDS - t_start)) s)"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
log "booting ($accel, 2 vCPUs, 3 GiB), bound ${vm_t} s; host load average $load0 (the VM's timings follow it)"
t_boot=$SECONDS
timeout -k 10 "$vm_t" qemu-system-x86_64 "${qaccel[@]}" -m 3072 -smp 2 -kernel "$C/vmlinuz" -initrd "$work/initrd" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init AIDOS_RXE_ROUNDS=${AIDOS_RXE_ROUNDS:-7} AIDOS_RXE_BUDGET=$((vm_t - 40))" -nographic -no-reboot -nic none \
	</dev/null >"$work/console.log" 2>&1 &
qpid=$!
wait "$qpid"
qrc=$?
qpid=""
vm_s=$((SECONDS - t_boot))
mkdir -p "$build/test-logs"
tr -d '\r' <"$work/console.log" >"$build/test-logs/rxe-console.log"
con=$build/test-logs/rxe-console.log

# ---- 5. results ----
grep -E '^(rxe-vm|    PASS|    FAIL|    SKIP|      )' "$con"
sed -n 's/^BENCH //p' "$con" >"$work/bench.jsonl"
: >"$work/table.txt"
if [[ -s $work/bench.jsonl && -x $PY ]]; then
	mkdir -p "$root/bench/results"
	"$PY" - "$work/bench.jsonl" "$root/bench/results/rxe-latest.json" "$accel" "$vm_s" "$load0 -> $(cut -d' ' -f1-3 /proc/loadavg)" >"$work/table.txt" 2>&1 <<'PYEOF'
import json, sys
rows = []
for l in open(sys.argv[1]):
    if l.strip().startswith('{'):
        try:
            rows.append(json.loads(l))
        except ValueError:   # a tool printed junk (inf, an empty field): drop that sample
            print("      dropped an unparsable BENCH line: %s" % l.strip()[:200])
def med(v):
    v = sorted(v)
    n = len(v)
    return None if not n else v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
def key(r):
    return "us" if "us" in r else "MBps" if "MBps" in r else "ms"
def get(tool, op, size):
    """The row, or for a measure taken in rounds the median of the round
    values (rounds preferred over a single run of the same measure)."""
    m = [r for r in rows if r.get("tool") == tool and r.get("op") == op and r.get("size") == size]
    rd = [r for r in m if "round" in r]
    if rd:
        k = key(rd[0])
        return {k: med([r[k] for r in rd]), "rounds": [r[k] for r in rd]}
    return m[0] if m else None
# the targets of issue 5, from the interleaved rounds: median of the round
# medians of each tool, and their ratio (also the median of the per-round
# ratios, which pairs each round's two measurements). Reported, not
# asserted: no timed assertions in tests, and under emulation on a shared
# host the same tool varies 2-50x between runs.
def round_ratios(tool_a, op_a, tool_b, op_b, size, k):
    a = {r["round"]: r[k] for r in rows if "round" in r and r.get("tool") == tool_a and r.get("op") == op_a and r.get("size") == size}
    b = {r["round"]: r[k] for r in rows if "round" in r and r.get("tool") == tool_b and r.get("op") == op_b and r.get("size") == size}
    return [b[i] / a[i] for i in sorted(a) if i in b and a[i] > 0]
def per_round(*a):
    return med(round_ratios(*a))
def spread(v):
    """min, quartiles (medians of the lower and upper halves), max."""
    v = sorted(v)
    n = len(v)
    if not n:
        return None
    return {"min": v[0], "q1": med(v[:n // 2]) if n > 1 else v[0], "median": med(v),
            "q3": med(v[(n + 1) // 2:]) if n > 1 else v[0], "max": v[-1], "n": n}
def fmt_spread(d, f="%.1f"):
    return (f + " [" + f + " " + f + " | " + f + " " + f + "]") % (d["median"], d["min"], d["q1"], d["q3"], d["max"])
summary = {"lat": {}, "bw": {}}
for sz in (2, 64, 1024):
    p, v = get("perftest", "write_lat", sz), get("aidos-verbs", "put_lat", sz)
    if p and v and "rounds" in p and "rounds" in v:
        rr = round_ratios("perftest", "write_lat", "aidos-verbs", "put_lat", sz, "us")
        summary["lat"][str(sz)] = {"ib_write_lat_us": p["us"], "aidos_put_lat_us": v["us"], "ratio": v["us"] / p["us"],
                                    "ratio_of_rounds": med(rr), "round_ratios": spread(rr),
                                    "ib_write_lat_spread": spread(p["rounds"]), "aidos_spread": spread(v["rounds"]),
                                    "ib_write_lat_rounds": p["rounds"], "aidos_rounds": v["rounds"]}
p, v = get("perftest", "write_bw", 1048576), get("aidos-verbs", "put_bw", 1048576)
if p and v and "rounds" in p and "rounds" in v:
    rr = round_ratios("perftest", "write_bw", "aidos-verbs", "put_bw", 1048576, "MBps")
    summary["bw"]["1048576"] = {"ib_write_bw_MBps": p["MBps"], "aidos_put_bw_MBps": v["MBps"], "ratio": v["MBps"] / p["MBps"],
                                "ratio_of_rounds": med(rr), "round_ratios": spread(rr),
                                "ib_write_bw_spread": spread(p["rounds"]), "aidos_spread": spread(v["rounds"]),
                                "ib_write_bw_rounds": p["rounds"], "aidos_rounds": v["rounds"]}
# A second view, the same for both tools: per round the fastest iteration
# (perftest's t_min), median over the rounds: the path's cost without the
# scheduling stalls a loaded, emulated host adds to most iterations.
for sz in (2, 64, 1024):
    e = summary["lat"].get(str(sz))
    if not e:
        continue
    pm = [r["us_min"] for r in rows if "round" in r and "us_min" in r and r.get("tool") == "perftest" and r.get("op") == "write_lat" and r.get("size") == sz]
    vm = [r["us_min"] for r in rows if "round" in r and "us_min" in r and r.get("tool") == "aidos-verbs" and r.get("op") == "put_lat" and r.get("size") == sz]
    if pm and vm:
        e["min_view"] = {"ib_write_lat_t_min": spread(pm), "aidos_min": spread(vm), "ratio": med(vm) / med(pm)}
summary["statistic"] = ("per tool, the median of its round figures (each round: perftest's t_typical / BW_average, "
                        "verbs_put's median iteration / MB/s over the same count); ratio = aidos median / perftest median; "
                        "spread = [min q1 | q3 max] of the rounds")
small = [summary["lat"][k] for k in ("2", "64") if k in summary["lat"]]
worst = max(small, key=lambda e: e["ratio"]) if len(small) == 2 else None
bw = summary["bw"].get("1048576")
summary["targets"] = {
    "lat_small": None if not worst else {"worst_ratio": worst["ratio"], "limit": 1.2, "met": worst["ratio"] <= 1.2},
    "bw_1MiB": None if not bw else {"ratio": bw["ratio"], "limit": 0.9, "met": bw["ratio"] >= 0.9}}
out = {"setup": "one QEMU VM (%s), Debian 6.1 kernel, rxe0@veth0 <-> rxe1@veth1, MTU 9000" % sys.argv[3],
       "vm_seconds": int(sys.argv[4]), "host_load": sys.argv[5], "summary": summary, "results": rows}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print("    comparison on the same rxe link (latency us, bandwidth MB/s; [r] = median of the interleaved rounds):")
print("      %-38s %9s %9s %9s %9s" % ("", "2 B", "64 B", "1 KiB", "4 KiB"))
def cell(r, k, f):
    return "-" if not r else (f % r[k]) + ("r" if "rounds" in r else " ")
def lat_row(name, tool, op):
    print("      %-38s %9s %9s %9s %9s" % (name, *[cell(get(tool, op, s), "us", "%.1f") for s in (2, 64, 1024, 4096)]))
lat_row("ib_write_lat (half RTT)", "perftest", "write_lat")
lat_row("aidos verbs put ping-pong (half RTT)", "aidos-verbs", "put_lat")
lat_row("ib_read_lat", "perftest", "read_lat")
lat_row("aidos verbs get", "aidos-verbs", "get_lat")
lat_row("aidos verbs put (blocking, RTT)", "aidos-verbs", "put_rtt")
lat_row("ucx_perftest ucp_put_lat (rc_v)", "ucx_perftest", "put_lat")
lat_row("aidos UCX put (blocking, rc_v)", "aidos-ucx", "put_rtt")
lat_row("aidos UCX get (rc_v)", "aidos-ucx", "get_lat")
print("      %-38s %9s %9s" % ("", "64 KiB", "1 MiB"))
def bw_row(name, tool, op):
    print("      %-38s %9s %9s" % (name, *[cell(get(tool, op, s), "MBps", "%.1f") for s in (65536, 1048576)]))
bw_row("ib_write_bw", "perftest", "write_bw")
bw_row("aidos verbs put", "aidos-verbs", "put_bw")
bw_row("ib_read_bw", "perftest", "read_bw")
bw_row("aidos verbs get", "aidos-verbs", "get_bw")
bw_row("ucx_perftest ucp_put_bw (rc_v)", "ucx_perftest", "put_bw")
bw_row("aidos UCX put (rc_v)", "aidos-ucx", "put_bw")
bw_row("aidos UCX get (rc_v)", "aidos-ucx", "get_bw")
mig = sorted((r for r in rows if r.get("op") == "migrate"), key=lambda r: r["size"])
if mig:
    print("      migration over RDMA READ, context size -> aidosctl migrate ms: " +
          ", ".join("%d KiB %.1f ms" % (r["size"] >> 10, r["ms"]) for r in mig))
print("    rounds: per tool the median of its rounds, spread [min q1 | q3 max]; the same statistic for both")
for k, e in summary["lat"].items():
    print("    rounds lat %s B: ib_write_lat %s us, aidos ping-pong %s us: ratio %.2fx; per-round ratios %s" %
          (k, fmt_spread(e["ib_write_lat_spread"]), fmt_spread(e["aidos_spread"]), e["ratio"],
           fmt_spread(e["round_ratios"], "%.2f") if e["round_ratios"] else "-"))
for k, e in summary["lat"].items():
    if "min_view" in e:
        m = e["min_view"]
        print("    rounds lat %s B, fastest iteration per round (t_min): ib_write_lat %s us, aidos %s us: ratio %.2fx" %
              (k, fmt_spread(m["ib_write_lat_t_min"]), fmt_spread(m["aidos_min"]), m["ratio"]))
if bw:
    print("    rounds bw 1 MiB: ib_write_bw %s MB/s, aidos put %s MB/s: ratio %.2f; per-round ratios %s" %
          (fmt_spread(bw["ib_write_bw_spread"]), fmt_spread(bw["aidos_spread"]), bw["ratio"],
           fmt_spread(bw["round_ratios"], "%.2f") if bw["round_ratios"] else "-"))
    print("    target bw-1MiB: aidos verbs put %.1f MB/s = %.0f%% of ib_write_bw %.1f MB/s, medians of %d rounds "
          "(per-round %.0f%%; >= 90%%: %s)" % (bw["aidos_put_bw_MBps"], 100 * bw["ratio"], bw["ib_write_bw_MBps"],
          len(bw["aidos_rounds"]), 100 * (bw["ratio_of_rounds"] or 0), "met" if bw["ratio"] >= 0.9 else "NOT met"))
else:
    print("    target bw-1MiB: not measured (ib_write_bw or aidos verbs put_bw rounds at 1 MiB missing)")
if worst:
    sz = [k for k in ("2", "64") if summary["lat"][k] is worst][0]
    print("    target lat-small: aidos verbs put ping-pong / ib_write_lat, worst of 2 B and 64 B: %.2fx "
          "(%s B: %.1f us vs %.1f us, medians of %d rounds; <= 1.2x: %s)" %
          (worst["ratio"], sz, worst["aidos_put_lat_us"], worst["ib_write_lat_us"], len(worst["aidos_rounds"]),
           "met" if worst["ratio"] <= 1.2 else "NOT met"))
else:
    print("    target lat-small: not measured (ib_write_lat or aidos verbs put_lat rounds missing)")
PYEOF
	(($? == 0)) || echo "    FAIL results: the comparison script failed" >>"$work/table.txt"
fi
cat "$work/table.txt"
passed=$(cat "$con" "$work/table.txt" | grep -c '^    PASS')
failed=$(cat "$con" "$work/table.txt" | grep -c '^    FAIL')
skipped=$(cat "$con" "$work/table.txt" | grep -c '^    SKIP')
if ! grep -q '^rxe-vm: done' "$con"; then
	log "the VM did not finish (qemu exit $qrc after $vm_s s); last console lines:"
	tail -n 30 "$con" | sed 's/^/    | /'
	failed=$((failed + 1))
fi
log "VM ($accel) ran $vm_s s; whole run $((SECONDS - t_start)) s; host load average $load0 at boot, $(cut -d' ' -f1-3 /proc/loadavg) now"
echo "$passed passed, $failed failed, $skipped skipped"
((failed)) && exit 1
((passed)) || exit 77
exit 0
