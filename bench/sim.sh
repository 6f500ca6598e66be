#!/usr/bin/env bash
# bench/sim.sh BUILD_DIR [--quick] - `make sim`: runs the cluster simulator
# (build/bench/sim, sched/sim.c driving the real sched/place.c) for random,
# round_robin, least_loaded and aidos at 1,000 nodes x 8 GPUs and 100,000
# agents, then aidos without rebalancing, then a load sweep (quick model),
# and writes bench/results/sim-latest.json, bench/results/sim-*.png and
# docs/scheduling.md (method, table, plots). About a minute and a half on 2
# cores. --quick: the scaled-down model only (seconds), JSON only.
set -euo pipefail
build=${1:-build}
quick=${2:-}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
sim=$build/bench/sim
[[ -x $sim ]] || { echo "sim: $sim missing (make)" >&2; exit 2; }
mkdir -p bench/results
if [[ $quick == --quick ]]; then
	exec "$sim" --quick --out bench/results/sim-latest.json
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$sim" --out bench/results/sim-latest.json --tsv "$tmp/main.tsv" | tee "$tmp/main.txt"
"$sim" --policy aidos --rebalance off --out "$tmp/norb.json" --tsv "$tmp/norb.tsv" | tee "$tmp/norb.txt"
# Load sweep on the quick model (100 nodes, 10,000 agents): p99 and SLO vs load.
for load in 0.3 0.4 0.5 0.6 0.7 0.8; do
	for p in least_loaded aidos; do
		"$sim" --quick --load $load --policy $p --out "$tmp/s.json" --tsv "$tmp/s.tsv" >/dev/null
		tail -n 1 "$tmp/s.tsv" | awk -v l=$load '{print l, $0}' >>"$tmp/sweep-$p.dat"
	done
done
sed 1d "$tmp/main.tsv" | awk '{print NR-1, $0}' >"$tmp/bars.dat"
if command -v gnuplot >/dev/null 2>&1; then
	gnuplot <<GP
set terminal pngcairo size 1000,420 font ",10" noenhanced
set output "bench/results/sim-policies.png"
set multiplot layout 1,3 title "1,000 nodes x 8 GPUs, 100,000 agents (bench/sim.sh)"
set style fill solid 0.6
set boxwidth 0.6
set xtics ("random" 0, "round_robin" 1, "least_loaded" 2, "aidos" 3) rotate by -25
set grid ytics
set title "p99 request latency (ms, log)"
set logscale y
plot "$tmp/bars.dat" using 1:4 with boxes notitle
unset logscale y
set title "SLO attainment"
set yrange [0.85:1]
plot "$tmp/bars.dat" using 1:5 with boxes notitle
set yrange [*:*]
set title "placement decision p99 (us, log)"
set logscale y
plot "$tmp/bars.dat" using 1:9 with boxes notitle
unset multiplot
GP
	gnuplot <<GP
set terminal pngcairo size 900,400 font ",10" noenhanced
set output "bench/results/sim-load.png"
set multiplot layout 1,2 title "Offered GPU load sweep (100 nodes x 8 GPUs, 10,000 agents)"
set xlabel "offered load"
set grid
set key top left
set title "p99 latency (ms, log)"
set logscale y
plot "$tmp/sweep-least_loaded.dat" using 1:4 with linespoints title "least_loaded", "$tmp/sweep-aidos.dat" using 1:4 with linespoints title "aidos"
unset logscale y
set key bottom left
set title "SLO attainment"
plot "$tmp/sweep-least_loaded.dat" using 1:5 with linespoints title "least_loaded", "$tmp/sweep-aidos.dat" using 1:5 with linespoints title "aidos"
unset multiplot
GP
fi
row() { awk -F'\t' -v p="$1" '$1==p {printf "| %s | %.1f | %.1f | %.4f | %.3f | %.3f | %.2f | %.2f | %.1f | %.4f |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$2"; }
table=$( {
	echo "| policy | p50 ms | p99 ms | SLO attainment | GPU util | migrations / agent-hour | decision p50 us | decision p99 us | high-class p99 ms | high-class SLO |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for p in random round_robin least_loaded aidos; do row $p "$tmp/main.tsv"; done
	row aidos "$tmp/norb.tsv" | sed 's/^| aidos /| aidos, --rebalance off /'
} )
sweep=$( {
	echo "| load | least_loaded p99 ms | aidos p99 ms | least_loaded SLO | aidos SLO |"
	echo "|---|---|---|---|---|"
	paste "$tmp/sweep-least_loaded.dat" "$tmp/sweep-aidos.dat" |
		awk '{printf "| %s | %.1f | %.1f | %.4f | %.4f |\n", $1, $4, $15, $5, $16}'
} )
head=$(head -n 1 "$tmp/main.txt")
python3 - "$tmp/main.tsv" >"$tmp/gain" <<'PY'
import sys
r = {l.split('\t')[0]: l.split('\t') for l in open(sys.argv[1]).read().splitlines()[1:]}
ll, ai = r['least_loaded'], r['aidos']
print("p99 %.1fx lower (%.0f ms vs %.0f ms); SLO misses %.1fx fewer (%.2f%% vs %.2f%%)" % (
    float(ll[2]) / float(ai[2]), float(ai[2]), float(ll[2]),
    (1 - float(ll[3])) / max(1e-9, 1 - float(ai[3])), 100 * (1 - float(ai[3])), 100 * (1 - float(ll[3]))))
PY
gain=$(cat "$tmp/gain")
coordline=$(python3 - <<'PY'
import json, os
f = 'bench/results/coord-place-latest.json'
if not os.path.exists(f):
    print('Not measured in this run (build/bench/coord_place writes bench/results/coord-place-latest.json).')
else:
    j = json.load(open(f))
    print('bench/coord_place.c fills the real coordinator (coordinator/coord.c, in process, nodes answered by an '
          'in-process fake) with %d nodes and %d agents through its own RegisterNode and Place handlers, then '
          'times coord_decide() (the decision Place, the placer and the rebalancer make): p50 %.0f us, p99 %.0f us '
          'wall clock, p99 %.0f us of thread CPU time; a whole Place call: p50 %.0f us, p99 %.0f us. The wall-clock '
          'p99 on this 2-core machine, shared with other builds, includes preemption (the CPU-time p99 does not); '
          'the decision itself is one pass over the nodes with no allocation.' % (j['nodes'], j['agents'],
          j['decide_p50_us'], j['decide_p99_us'], j.get('decide_cpu_p99_us', 0), j['place_p50_us'], j['place_p99_us']))
PY
)
rebline=$(python3 - <<'PY'
import json, os
f = 'bench/results/rebalance-latest.json'
if not os.path.exists(f):
    print('Not measured in this run (bench/rebalance.sh, needs root).')
else:
    j = json.load(open(f))
    print('bench/rebalance.sh (tests/rebalance.sh checks it): %s. High-priority p99: unloaded %.2f ms, loaded %.2f ms, '
          'after the coordinator moved the low-priority agents away by itself %.2f ms (x%.2f of unloaded; acceptance '
          '<= 1.5x); first move %.1f s after the load started, both %.1f s.' % (j['setup'], j['unloaded_p99_ms'],
          j['loaded_p99_ms'], j['after_p99_ms'], j['after_over_unloaded'], j['seconds_to_first_move'], j['seconds_to_rebalance']) + ' Percentiles of ~600 probes on this 2-core machine shared with other builds swing between runs (unloaded p99 from 3.7 to 17.6 ms in the runs of this session: whole-machine stalls of up to 1 s hit whichever phase is running); tests/rebalance.sh measures once more when only the p99 check fails.')
PY
)
cat >docs/scheduling.md <<MD
# Scheduling: the global placement policy, rebalancing, and the simulator

Generated by \`make sim\` (bench/sim.sh) on $(date -u +%Y-%m-%d); numbers from this run. Code:
\`sched/place.c\` (policy), \`sched/sim.c\` (model), \`bench/sim.c\` (driver), \`coordinator/coord.c\`
(the view, \`explain\`, the rebalancer).

## The policy (sched/sched.h)
Hard constraints first: ready, not excluded, the operator pin (overrides every score, never fit), a GPU
when the agent needs one, free pool memory (net of quotas). Then each feasible node gets a predicted cost
in ms per request of the agent, lower is better, kept as separate terms so \`aidosctl explain\` shows them:

- **latency**: the model's latency estimate on the device it would use there (GPU first when it fits in
  GPU memory), times the node's measured speed, times 1/(1-U), U the node's utilisation of that device
  by agents of the same or a higher priority class plus the agent's own expected load (M/M/1 response
  factor; with priority dispatch lower classes barely delay it), capped at U = 0.95;
- **queue**: measured backlog (queue length x estimate / servers), scaled by the share of the node's load
  of the agent's class or above;
- **gpu**: a fixed penalty when a GPU-capable agent would run on a CPU;
- **move**: context bytes / link bandwidth + rtt, amortised over 100 requests, when the context lives on
  another node;
- **memory**: pool pressure, w x (used after placing / pool size)^2;
- **spread**: a penalty per replica of the same group already on the node.

Ties break on queue length, agents, free memory and name, so a decision never depends on node order.
The view behind it is a set of per-node aggregates (utilisation per device and class, queue, free
memory, agents) that the coordinator updates incrementally from heartbeats and placements, so one
decision is one pass over the nodes with no allocation.

Rebalancing (\`sched_overloaded\`, \`sched_move_worth\`; the coordinator's task, the simulator's
ticks): a node whose measured response time (execution plus queueing) exceeds its estimate by 2x, or
whose utilisation exceeds 0.9, for 3 consecutive checks is overloaded; it moves its lowest-priority,
heaviest agent to the node the policy ranks first, only if that cuts the agent's predicted cost by 30%
(minimum gain; any gain when a higher class runs on the source: a high-priority agent that needs room
makes lower ones leave) and the agent has not moved in the last 60 s (cool-down). The coordinator also
never moves an agent onto a node running a higher class (the simulator, where every node runs some
high-class agents, does not apply that rule). Each move carries its context through the existing
migration path, is logged with its reason and shows in \`aidosctl top\` / \`explain\`
(docs/cluster.md, "Rebalancing").

## The model (sched/sim.c)
A discrete-event simulation (one binary heap of events, requests in a pool, per-node per-device
per-class FIFO queues) that calls the very same \`sched_rank()\` as the coordinator:

- $head; 3 GPU generations round-robin over the nodes with speed 1.0, 1.35, 1.8 (latency multiplier),
  8 GPUs x 80 GiB and 16 CPU workers per node; nodes fail as a Poisson process and return after 60 s;
  their agents are placed again by the policy under test (counted as migrations for every policy).
- 300 models: GPU latency lognormal (median 25 ms, sigma 0.8), CPU 3-40x slower (lognormal), memory
  lognormal (median 3 GiB, sigma 0.9) plus a per-agent context (median 128 MiB); Zipf(1) popularity.
- Agents: Pareto(1.5) request rates scaled to the offered load (60% of speed-weighted GPU capacity),
  Poisson requests with on/off bursts (x4 for ~5 s every ~20 s), classes high/normal/low (10/30/60%)
  with SLOs 3x/6x/15x the model's GPU latency (+10/20/50 ms); agents arrive as a Poisson process during
  the first 30 s, which is warm-up; latency, SLO and GPU utilisation count after it.
- Each node dispatches by priority, non-preemptive, for every policy (it is node-side).
- Information: random and round_robin see fit only; least_loaded sees queue length, agent count and
  free memory; aidos sees those plus per-model, per-device latency estimates (true mean x 15% noise),
  node device speeds, request rates it measured (a new agent gets the population mean), priority classes
  and context sizes. Decision latency is the wall-clock time of each policy call on this machine.

## Results
$table

aidos vs least_loaded: $gain.

![policies](../bench/results/sim-policies.png)

$sweep

![load sweep](../bench/results/sim-load.png)

## Why aidos wins, honestly
It wins because it uses information least_loaded ignores, not because the model favours it:
- **latency per device**: a third of the nodes have GPUs 1.8x slower; counting agents or queued requests
  treats them as equal, so they carry the same work at 1.8x the busy time and their queues grow. aidos
  fills them in proportion to their speed.
- **load, not counts**: request rates are heavy-tailed; two nodes with 100 agents each can differ 3x in
  offered work. aidos's view holds each agent's measured rate x estimated latency.
- **priority classes**: a high-class agent goes where little high-class work runs, even if the node is
  busy with low-class work the dispatcher will put behind it.
- **rebalancing** (measured, then acting with hysteresis): compare aidos with and without it above. The
  placement alone accounts for most of the p99 gain; rebalancing removes the hot spots that priors
  cannot foresee (a new agent's rate is unknown when it is placed).
- **GPU utilisation is lower for aidos** because the same requests take less GPU time on faster GPUs;
  it is busy time over capacity, not work done.

## Decision latency in the real coordinator
$coordline

## On the one-machine cluster
$rebline

Limits of the model: the offered load is stationary after warm-up (no diurnal cycle); migration costs
are modelled as unavailability (model load + context over 100 Gb/s), not as bandwidth contention;
heartbeat staleness is not modelled (every policy sees exact queue lengths, which helps least_loaded).
Reproduce: \`make sim\` (full, ~1.5 min on 2 cores) or \`build/bench/sim --quick\` (1 s).
MD
echo "wrote docs/scheduling.md bench/results/sim-latest.json bench/results/sim-policies.png bench/results/sim-load.png"
