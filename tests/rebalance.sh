#!/usr/bin/env bash
# tests/rebalance.sh BUILD_DIR - issue 6's one-machine acceptance: on a
# 2-node cluster (network namespaces, node K pinned to CPU K-1), saturating
# n1 with low-priority load while a high-priority agent runs there makes the
# coordinator move the load away by itself, and the high-priority p99 comes
# back within 1.5x of unloaded. The measurement is bench/rebalance.sh's
# (see it for the setup); checks:
#   moved     the coordinator moved lo1 and lo2 from n1 to n2 (events,
#             reasons), hi stayed on n1
#   p99       after rebalancing, hi's p99 <= 1.5 x its unloaded p99
#   worse     while loaded (before the first move) hi's p99 was worse than
#             after (the load really hurt, so the recovery means something)
# A p99 of 400 requests on a shared 2-core machine can catch another
# tenant's burst: when only the p99 check fails, the measurement runs once
# more and the second run decides (both printed). Under sanitizers
# (AIDOS_SAN=1: the model runs ~5x slower, with ASan's own jitter) the two
# timing checks are reported and skipped, and one move of lo1/lo2 suffices
# (one saturated agent alone may stay under the threshold there). Needs
# root and network namespaces: exit 77 otherwise. Last line:
# `N passed, N failed, N skipped`.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
for attempt in 1 2; do
	timeout 300 bench/rebalance.sh "$build" "$tmp/r.json" >"$tmp/out.txt" 2>&1
	rc=$?
	sed 's/^/    /' "$tmp/out.txt"
	if ((rc == 77)); then
		echo "rebalance: skipped (needs root, taskset, network namespaces, models)"
		exit 77
	fi
	if ((rc != 0)); then
		echo "FAIL rebalance run (exit $rc)"
		echo "0 passed, 1 failed, 0 skipped"
		exit 1
	fi
	/usr/bin/python3 - "$tmp/r.json" "${AIDOS_SAN:-0}" >"$tmp/checks.txt" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
san = sys.argv[2] == '1'
def timing(ok):
    return 'SKIP' if san else ('ok  ' if ok else 'FAIL')
moved = sorted(m['agent'] for m in r['moves'] if m['from'] == 'n1' and m['to'] == 'n2')
got = set(moved)
good = (got and got <= {'lo1', 'lo2'}) if san else got == {'lo1', 'lo2'}
print('%s moved: %s' % ('ok  ' if good and all(m['agent'] != 'hi' and 'overloaded' in m['reason'] for m in r['moves'])
      else 'FAIL', moved))
print('%s p99: after %.2f ms vs unloaded %.2f ms (x%.2f, limit 1.5)' % (timing(r['after_over_unloaded'] <= 1.5),
      r['after_p99_ms'], r['unloaded_p99_ms'], r['after_over_unloaded']))
print('%s worse: loaded p99 %.2f ms > after %.2f ms' % (timing(r['loaded_p99_ms'] > r['after_p99_ms']),
      r['loaded_p99_ms'], r['after_p99_ms']))
PY
	cat "$tmp/checks.txt"
	if ((attempt == 1)) && grep -q '^FAIL p99' "$tmp/checks.txt" && ! grep -q '^FAIL moved\|^FAIL worse' "$tmp/checks.txt"; then
		echo "rebalance: p99 over the limit in run 1: measuring once more"
		continue
	fi
	break
done
pass=$(grep -c '^ok' "$tmp/checks.txt")
fail=$(grep -c '^FAIL' "$tmp/checks.txt")
skip=$(grep -c '^SKIP' "$tmp/checks.txt")
((skip)) && echo "rebalance: timing checks skipped under sanitizers (measured on the optimized build)"
echo "$pass passed, $fail failed, $skip skipped"
((fail == 0))
