#!/usr/bin/env bash
# tests/rebalance.sh BUILD_DIR - issue 6's one-machine acceptance: on a
# 2-node cluster (network namespaces, node K pinned to CPU K-1), saturating
# n1 with low-priority load while a high-priority agent runs there makes the
# coordinator move the load away by itself, and the high-priority p99 comes
# back within 1.5x of unloaded. The measurement is bench/rebalance.sh's
# (see it for the setup). Checked (asserted):
#   moved     the coordinator moved lo1 and lo2 from n1 to n2 (events,
#             reasons), hi stayed on n1
# Reported, never asserted (tests hold no timed assertions: a shared 2-core
# machine moves a p99 of 400 requests by several times; `make bench` runs
# bench/rebalance.sh and records the figures):
#   p99       after rebalancing vs unloaded (issue 6's target: <= 1.5x)
#   worse     loaded (before the first move) vs after
# Under sanitizers (AIDOS_SAN=1: the model runs ~5x slower) one move of
# lo1/lo2 suffices (one saturated agent alone may stay under the threshold
# there). Needs root and network namespaces: exit 77 otherwise. Last line:
# `N passed, N failed, N skipped`.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
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
moved = sorted(m['agent'] for m in r['moves'] if m['from'] == 'n1' and m['to'] == 'n2')
got = set(moved)
good = (got and got <= {'lo1', 'lo2'}) if san else got == {'lo1', 'lo2'}
print('%s moved: %s' % ('ok  ' if good and all(m['agent'] != 'hi' and 'overloaded' in m['reason'] for m in r['moves'])
      else 'FAIL', moved))
print('note p99: after %.2f ms vs unloaded %.2f ms (x%.2f; target 1.5, measured by make bench)' % (
      r['after_p99_ms'], r['unloaded_p99_ms'], r['after_over_unloaded']))
print('note loaded p99 %.2f ms, after %.2f ms' % (r['loaded_p99_ms'], r['after_p99_ms']))
PY
cat "$tmp/checks.txt"
pass=$(grep -c '^ok' "$tmp/checks.txt")
fail=$(grep -c '^FAIL' "$tmp/checks.txt")
echo "$pass passed, $fail failed, 0 skipped"
((fail == 0))
