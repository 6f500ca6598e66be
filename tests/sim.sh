#!/usr/bin/env bash
# tests/sim.sh BUILD_DIR - the simulator in quick mode (100 nodes, 10,000
# agents, 60 s simulated, about a second): its JSON has exactly the fields
# docs/scheduling.md promises, for the four policies, and aidos beats
# least_loaded by at least 20% on p99 latency or on SLO attainment with
# migrations bounded. The JSON goes to a temporary file, not bench/results.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
"$build/bench/sim" --quick --out "$tmp/sim.json" >"$tmp/out.txt" 2>&1
check "sim --quick runs" '[[ $? -eq 0 && -s $tmp/sim.json ]]'
sed 's/^/    /' "$tmp/out.txt"
check "--help" '"$build/bench/sim" --help | grep -q "least_loaded"'
check "bad option is one line and exit 2" '"$build/bench/sim" --bogus 2>&1 >/dev/null | grep -q "unknown option"; [[ ${PIPESTATUS[0]} -eq 2 ]]'
/usr/bin/python3 - "$tmp/sim.json" >"$tmp/py.txt" 2>&1 <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert set(j) == {"policies", "decision_p99_us", "nodes", "agents"}, j.keys()
assert set(j["policies"]) == {"random", "round_robin", "least_loaded", "aidos"}, j["policies"].keys()
for name, p in j["policies"].items():
    assert set(p) == {"p50_ms", "p99_ms", "slo_attainment", "gpu_util", "migrations_per_agent_hour"}, (name, p)
    assert all(isinstance(v, (int, float)) for v in p.values()), p
    assert 0 < p["p50_ms"] <= p["p99_ms"] and 0 < p["slo_attainment"] <= 1 and 0 < p["gpu_util"] <= 1, (name, p)
assert j["nodes"] == 100 and j["agents"] == 10000 and j["decision_p99_us"] > 0
ll, ai = j["policies"]["least_loaded"], j["policies"]["aidos"]
assert ai["p99_ms"] <= 0.8 * ll["p99_ms"] or ai["slo_attainment"] >= 1.2 * ll["slo_attainment"], (ll, ai)
assert ai["migrations_per_agent_hour"] < 5, ai
print("aidos p99 %.0f ms vs least_loaded %.0f ms; SLO %.4f vs %.4f" % (ai["p99_ms"], ll["p99_ms"], ai["slo_attainment"], ll["slo_attainment"]))
PY
rc=$?
sed 's/^/    /' "$tmp/py.txt"
check "JSON fields; aidos beats least_loaded by >= 20% (p99 or SLO)" '[[ $rc -eq 0 ]]'
echo "$pass passed, $fail failed, 0 skipped"
[[ $fail -eq 0 ]]
