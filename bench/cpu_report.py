#!/usr/bin/python3
"""bench/cpu_report.py - statistics, tables and chart of `make bench-cpu` (bench/cpu.sh).

    cpu_report.py line DIR ID THREADS    one model's line, printed as it finishes
    cpu_report.py report TMP OUTDIR      OUTDIR/cpu-latest.{json,md,png}

TMP is bench/cpu.sh's work folder: meta, r/<threads>/<id>/{aidos.ns, ort.ns,
steps, desc, aidos/*.npy, ort/*.npy, error}, r/dispatch/. Latency statistics
are per side over all timed runs: median and p90 (nearest rank); the ratio is
aidos median / ORT median; per thread count the geometric mean of the ratios
and the largest. The paired ratio is the median over rounds of (aidos's
block median / ORT's block median) of the same round, two blocks run next
to each other: this host switches between a fast and a slow phase every few
seconds (MobileNetV2 on 1 thread: aidos 9.2 vs 12.2-13.5 ms, ORT 10.3 vs
12.5-13.5), and where a run's samples fall about half in each phase, the
median of each side lands in whichever phase holds its 26th of 50 runs. Outputs of the two runtimes are compared once per model
(first thread count): the largest absolute difference, the largest |ORT
value|, and a mismatch flag when the difference exceeds
1e-3 * max(1, largest |value|). Benchmark tooling (numpy), never run by aidos.
"""
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np

ORDER = ["det640", "det320", "rec", "cls", "vad", "mel", "embedding", "hey_jarvis", "mobilenetv2", "bert", "gpt2"]


def ns(path, ndmin=1):
    """A bench/cpu.sh timings file, or None when it is missing or empty:
    FILE.ns one latency in ns per line (ndmin 1), FILE.cpu a row
    "RUNS CPU_NS" per timed block (ndmin 2)."""
    if not os.path.exists(path):
        return None
    v = np.loadtxt(path, dtype=np.float64, ndmin=ndmin)
    return v if v.size else None


def pct(v, q):
    s = np.sort(v)
    return float(s[min(len(s) - 1, max(0, int(math.ceil(q / 100.0 * len(s))) - 1))])


def stats(v, c):
    r = {"runs": int(v.size), "median_ms": float(np.median(v)) / 1e6, "p90_ms": pct(v, 90) / 1e6,
         "min_ms": float(v.min()) / 1e6}
    if c is not None:
        # process CPU time (all threads) per run, over all timed blocks
        r["cpu_ms"] = float(c[:, 1].sum() / c[:, 0].sum()) / 1e6
    return r


def blocks(v, c):
    """The per-block medians of v, blocks sized as the FILE.cpu rows c list them."""
    if c is None:
        return None
    k = c[:, 0].astype(int)
    if sum(k) != v.size:
        return None
    out, i = [], 0
    for n in k:
        out.append(float(np.median(v[i:i + n])))
        i += n
    return out


def model_result(d, mid, threads):
    r = {"id": mid, "threads": threads, "desc": open(os.path.join(d, "desc")).read().strip()}
    if os.path.exists(os.path.join(d, "error")):
        r["error"] = open(os.path.join(d, "error")).read().strip()
    a, o = ns(os.path.join(d, "aidos.ns")), ns(os.path.join(d, "ort.ns"))
    if a is None or o is None:
        r.setdefault("error", "no timings")
        return r
    ca, co = ns(os.path.join(d, "aidos.ns.cpu"), 2), ns(os.path.join(d, "ort.ns.cpu"), 2)
    r["aidos"] = stats(a, ca)
    r["ort"] = stats(o, co)
    r["ratio"] = r["aidos"]["median_ms"] / r["ort"]["median_ms"]
    r["ratio_min"] = r["aidos"]["min_ms"] / r["ort"]["min_ms"]
    ba, bo = blocks(a, ca), blocks(o, co)
    if ba and bo and len(ba) == len(bo):
        r["ratio_paired"] = float(np.median([x / y for x, y in zip(ba, bo)]))
        r["pairs"] = len(ba)
    if r["aidos"].get("cpu_ms") and r["ort"].get("cpu_ms"):
        r["ratio_cpu"] = r["aidos"]["cpu_ms"] / r["ort"]["cpu_ms"]
    if os.path.exists(os.path.join(d, "load")):
        r["load_average"] = float(open(os.path.join(d, "load")).read().split()[0])
    if os.path.exists(os.path.join(d, "steps")):
        r["aidos_steps"] = int(open(os.path.join(d, "steps")).read().split()[0])
    return r


def compare(d):
    """Largest |aidos - ORT| over every output both wrote."""
    worst = {"max_abs_err": 0.0, "max_abs_ref": 0.0, "outputs": 0, "ok": True}
    files = sorted(glob.glob(os.path.join(d, "ort", "*.npy")))
    if not files:
        return None
    for f in files:
        af = os.path.join(d, "aidos", os.path.basename(f))
        ref = np.load(f).astype(np.float64)
        if not os.path.exists(af):
            return {"ok": False, "why": "aidos wrote no " + os.path.basename(f)}
        got = np.load(af).astype(np.float64)
        if got.shape != ref.shape:
            return {"ok": False, "why": f"{os.path.basename(f)}: shape {got.shape} vs {ref.shape}"}
        err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        worst["outputs"] += 1
        worst["max_abs_err"] = max(worst["max_abs_err"], err)
        worst["max_abs_ref"] = max(worst["max_abs_ref"], scale)
        if not err <= 1e-3 * max(1.0, scale):
            worst["ok"] = False
    return worst


def fmt_line(r):
    if "ratio" not in r:
        return f"{r['id']:<12} {r['threads']}t  ERROR {r.get('error', '')}"
    a, o = r["aidos"], r["ort"]
    return (f"{r['id']:<12} {r['threads']}t  aidos {a['median_ms']:9.3f} ms (p90 {a['p90_ms']:9.3f})  "
            f"ORT {o['median_ms']:9.3f} ms (p90 {o['p90_ms']:9.3f})  aidos/ORT {r['ratio']:5.2f}"
            + (f" (paired {r['ratio_paired']:5.2f})  " if "ratio_paired" in r else "  ") +
            f"[{a['runs']}+{o['runs']} runs]")


def report(tmp, outdir):
    meta = {}
    for line in open(os.path.join(tmp, "meta")):
        k, _, v = line.strip().partition(" ")
        meta[k] = v
    res = {"date": meta.get("date"), "machine": meta.get("machine"), "commit": meta.get("commit"),
           "load_average_start": meta.get("load_start"), "load_average_end": meta.get("load_end"),
           "ort": "onnxruntime-node 1.30.0 (CPU EP, graphOptimizationLevel all, interOpNumThreads 1, sequential)",
           "timing": "wall clock around one public run call per side; rounds of aidos and ORT runs interleaved",
           "threads": {}, "accuracy": {}}
    runs = meta.get("runs", "").split()
    if len(runs) == 4:
        res["runs"], res["runs_det640"], res["block"], res["warmup"] = map(int, runs)
    if "pause_ms" in meta:
        res["pause_ms_between_blocks"] = int(meta["pause_ms"])
    if "pin_cpu" in meta:
        res["one_thread_cpu"] = None if meta["pin_cpu"] == "none" else int(meta["pin_cpu"])
    tdirs = sorted(d for d in glob.glob(os.path.join(tmp, "r", "*")) if os.path.basename(d).isdigit())
    for td in tdirs:
        t = os.path.basename(td)
        ids = [i for i in ORDER if os.path.isdir(os.path.join(td, i))]
        rows = [model_result(os.path.join(td, i), i, int(t)) for i in ids]
        for i in ids:
            c = compare(os.path.join(td, i))
            if c is not None:
                res["accuracy"][i] = c
        ratios = [r["ratio"] for r in rows if "ratio" in r]
        entry = {"models": rows}
        if ratios:
            entry["geomean_ratio"] = float(np.exp(np.mean(np.log(ratios))))
            entry["geomean_ratio_min"] = float(np.exp(np.mean(np.log([r["ratio_min"] for r in rows if "ratio" in r]))))
            rc = [r["ratio_cpu"] for r in rows if "ratio_cpu" in r]
            if rc:
                entry["geomean_ratio_cpu"] = float(np.exp(np.mean(np.log(rc))))
            rp = [r for r in rows if "ratio_paired" in r]
            if rp:
                entry["geomean_ratio_paired"] = float(np.exp(np.mean(np.log([r["ratio_paired"] for r in rp]))))
                wp = max(rp, key=lambda r: r["ratio_paired"])
                entry["max_ratio_paired"], entry["max_ratio_paired_model"] = wp["ratio_paired"], wp["id"]
            worst = max((r for r in rows if "ratio" in r), key=lambda r: r["ratio"])
            entry["max_ratio"], entry["max_ratio_model"] = worst["ratio"], worst["id"]
            entry["complete"] = len(ratios) == len(ORDER)
        res["threads"][t] = entry
    dd = os.path.join(tmp, "r", "dispatch")
    a, o = ns(os.path.join(dd, "aidos.ns")), ns(os.path.join(dd, "ort.ns"))
    if a is not None and o is not None:
        steps = int(open(os.path.join(dd, "steps")).read().split()[0]) if os.path.exists(os.path.join(dd, "steps")) else 1000
        nov = ns(os.path.join(dd, "node_overhead.ns"))
        res["dispatch"] = {
            "model": "dispatch_1000.onnx: 1,000 nodes (Add, Relu, Identity cycled) on a 1-element tensor, 1 thread",
            "nodes": 1000, "aidos_steps": steps,
            "aidos_median_us": float(np.median(a)) / 1e3, "ort_median_us": float(np.median(o)) / 1e3,
            "aidos_ns_per_node": float(np.median(a)) / 1000, "aidos_ns_per_step": float(np.median(a)) / max(1, steps),
            "ort_ns_per_node": float(np.median(o)) / 1000,
            "node_overhead_us": float(np.median(nov)) / 1e3 if nov is not None else None,
        }
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "cpu-latest.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res)
    with open(os.path.join(outdir, "cpu-latest.md"), "w") as f:
        f.write(md)
    print(md)
    chart(res, os.path.join(outdir, "cpu-latest.png"))
    print(f"wrote {outdir}/cpu-latest.json, cpu-latest.md, cpu-latest.png")


def markdown(res):
    out = []
    ts = sorted(res["threads"])
    hdr = "| model |"
    sep = "|---|"
    for t in ts:
        hdr += f" aidos {t}t median (p90) ms | ORT {t}t median (p90) ms | ratio {t}t | paired {t}t |"
        sep += "---:|---:|---:|---:|"
    out += [hdr, sep]
    ids = [i for i in ORDER if any(i in [r["id"] for r in res["threads"][t]["models"]] for t in ts)]
    desc = {}
    for t in ts:
        for r in res["threads"][t]["models"]:
            desc[r["id"]] = r["desc"]
    for i in ids:
        row = f"| {desc.get(i, i)} |"
        for t in ts:
            r = next((r for r in res["threads"][t]["models"] if r["id"] == i), None)
            if r is None or "ratio" not in r:
                row += " error | error | - | - |" if r else " - | - | - | - |"
                continue
            a, o = r["aidos"], r["ort"]
            row += (f" {a['median_ms']:.3f} ({a['p90_ms']:.3f}) | {o['median_ms']:.3f} ({o['p90_ms']:.3f}) |"
                    f" **{r['ratio']:.2f}** |" + (f" {r['ratio_paired']:.2f} |" if "ratio_paired" in r else " - |"))
        out.append(row)
    row = "| **geomean of ratios / max** |"
    for t in ts:
        e = res["threads"][t]
        if "geomean_ratio" in e:
            row += f" | | **{e['geomean_ratio']:.2f}** / {e['max_ratio']:.2f} ({e['max_ratio_model']}) |"
        else:
            row += " | | - |"
        if "geomean_ratio_paired" in e:
            row += f" {e['geomean_ratio_paired']:.2f} / {e['max_ratio_paired']:.2f} ({e['max_ratio_paired_model']}) |"
        else:
            row += " - |"
    out.append(row)
    out.append("")
    # Two more lenses on a shared machine: the fastest run of each side, and
    # the process CPU time per run (all threads: on 1 thread the cost of the
    # run without the time other processes held the CPU; on 2 it also
    # counts workers spinning).
    hdr, sep = "| model |", "|---|"
    for t in ts:
        hdr += f" fastest run {t}t: aidos / ORT ms | mean CPU time per run {t}t: aidos / ORT ms |"
        sep += "---:|---:|"
    out += [hdr, sep]
    for i in ids:
        row = f"| {i} |"
        for t in ts:
            r = next((r for r in res["threads"][t]["models"] if r["id"] == i and "ratio" in r), None)
            if r is None:
                row += " - | - |"
                continue
            a, o = r["aidos"], r["ort"]
            row += f" {a['min_ms']:.3f} / {o['min_ms']:.3f} = {r['ratio_min']:.2f} |"
            row += (f" {a['cpu_ms']:.3f} / {o['cpu_ms']:.3f} = {r['ratio_cpu']:.2f} |" if "ratio_cpu" in r else " - |")
        out.append(row)
    row = "| **geomean** |"
    for t in ts:
        e = res["threads"][t]
        row += f" **{e.get('geomean_ratio_min', float('nan')):.2f}** |"
        row += f" **{e['geomean_ratio_cpu']:.2f}** |" if "geomean_ratio_cpu" in e else " - |"
    out.append(row)
    out.append("")
    acc = res.get("accuracy", {})
    if acc:
        parts = []
        for i in ORDER:
            if i in acc:
                c = acc[i]
                if "max_abs_err" in c:
                    parts.append(f"{i} {c['max_abs_err']:.1e}" + ("" if c["ok"] else " **MISMATCH**"))
                else:
                    parts.append(f"{i} **MISMATCH** ({c.get('why')})")
        out.append("Outputs aidos vs ORT, max |difference| (flagged above 1e-3 x max(1, max |value|)): "
                   + ", ".join(parts) + ".")
        out.append("")
    dp = res.get("dispatch")
    if dp:
        out.append(f"Per-op dispatch ({dp['model']}): aidos {dp['aidos_median_us']:.1f} us per run = "
                   f"{dp['aidos_ns_per_node']:.1f} ns per node ({dp['aidos_steps']} steps: "
                   f"{dp['aidos_ns_per_step']:.1f} ns per step); ORT {dp['ort_median_us']:.1f} us = "
                   f"{dp['ort_ns_per_node']:.1f} ns per node"
                   + (f" (of which node's own promise round trip about {dp['node_overhead_us']:.1f} us per run)"
                      if dp.get("node_overhead_us") is not None else "") + ".")
        out.append("")
    r = res
    extra = f", {r['runs']} timed runs per side ({r['runs_det640']} for det 640) in blocks of {r['block']} after {r['warmup']} warm-up, {r.get('pause_ms_between_blocks', 20)} ms pause before each block" if "runs" in r else ""
    if r.get("one_thread_cpu") is not None:
        extra += f"; on 1 thread both drivers pinned to CPU {r['one_thread_cpu']}"
    out.append(f"{r['date']}, {r['machine']}, commit {r['commit']}{extra}; load average "
               f"{r['load_average_start']} at the start, {r['load_average_end']} at the end. "
               f"ORT: {r['ort']}.")
    return "\n".join(out) + "\n"


def chart(res, png):
    try:
        subprocess.run(["gnuplot", "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        print("bench-cpu: gnuplot missing: no chart")
        return
    ts = sorted(res["threads"])
    ids = [i for i in ORDER if all(any(r["id"] == i and "ratio" in r for r in res["threads"][t]["models"]) for t in ts)]
    if not ids:
        return
    dat = png + ".dat"
    with open(dat, "w") as f:
        for i in ids:
            vals = [next(r for r in res["threads"][t]["models"] if r["id"] == i)["ratio"] for t in ts]
            f.write(i + " " + " ".join(f"{v:.4f}" for v in vals) + "\n")
    plots = ", ".join(f"'{dat}' using {k + 2}:xtic(1) title '{t} thread{'s' if t != '1' else ''}'"
                      for k, t in enumerate(ts))
    geo = " ".join(f"{t}t {res['threads'][t].get('geomean_ratio', float('nan')):.2f}" for t in ts)
    script = f"""
set terminal pngcairo size 1000,480 font ",10" noenhanced
set output '{png}'
set title "aidos / ONNX Runtime 1.30 median latency (lower is better; geomean {geo})"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel "aidos median / ORT median (log scale)"
set logscale y
set yrange [0.1:*]
set xtics rotate by -30 scale 0
set grid ytics
set key top left
plot {plots}, 1.0 with lines lw 2 lc rgb "black" title "ORT", 0.8 with lines dt 2 lc rgb "red" title "target 0.80"
"""
    p = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    os.unlink(dat)
    if p.returncode:
        print("bench-cpu: gnuplot failed: " + p.stderr.strip())


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "line":
        d, mid, t = sys.argv[2], sys.argv[3], int(sys.argv[4])
        line = fmt_line(model_result(d, mid, t))
        c = compare(d)
        if c is not None:
            line += (f"  max|err| {c['max_abs_err']:.1e}" if "max_abs_err" in c else "") + ("" if c["ok"] else "  MISMATCH")
        print(line, flush=True)
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
