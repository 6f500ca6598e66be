#!/usr/bin/env node
// tools/ort_ref.js - ONNX Runtime reference data for aidos's golden tests.
//
//   node tools/ort_ref.js --cases tests/golden/cases.json \
//        --models $AIDOS_CACHE/models --out $AIDOS_CACHE/golden.new
//
// For each case of the case file (its format is described in its "about"):
// generates the inputs (deterministic: seeded PRNG below), runs
// onnxruntime-node (CPU, default graph optimisation, 1 intra-op and 1
// inter-op thread) and writes
//   <out>/<case>/in/<input>.npy, <out>/<case>/out/<output>.npy
//     (sequences: in/<kk>_<input>.npy, out/<kk>_<output>.npy, kk = step 00..)
//   <out>/manifest.txt: the line-based index tests/test_golden.c reads
// File names are tensor names with every byte outside [A-Za-z0-9._-]
// replaced by '_' (so '/' -> '_'); the manifest keeps the real names.
// Called by tools/fetch-models.sh, which decides when the data is stale.
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const ortRequire = createRequire(path.join(__dirname, 'npm', 'package.json'));
let ort;
try {
	ort = ortRequire('onnxruntime-node');
} catch (e) {
	console.error(`ort_ref: cannot load onnxruntime-node from tools/npm (run 'make deps'): ${e.message}`);
	process.exit(1);
}

function die(msg) {
	console.error(`ort_ref: error: ${msg}`);
	process.exit(1);
}

function parseArgs(argv) {
	const a = { cases: null, models: null, out: null, only: null, quiet: false };
	for (let i = 2; i < argv.length; i++) {
		const k = argv[i];
		if (k === '--quiet') a.quiet = true;
		else if (['--cases', '--models', '--out', '--only'].includes(k) && i + 1 < argv.length)
			a[k.slice(2)] = argv[++i];
		else die(`usage: ort_ref.js --cases FILE --models DIR --out DIR [--only CASE] [--quiet] (bad argument '${k}')`);
	}
	if (!a.cases || !a.models || !a.out) die('--cases, --models and --out are required');
	return a;
}

// ---- PRNG: xoshiro128** (Blackman & Vigna), seeded through splitmix32 ----
function splitmix32(s) {
	return () => {
		s = (s + 0x9e3779b9) | 0;
		let z = s;
		z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
		z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
		return (z ^ (z >>> 16)) >>> 0;
	};
}

class Rng {
	constructor(seed) {
		const sm = splitmix32(seed >>> 0);
		this.s = new Uint32Array([sm(), sm(), sm(), sm()]);
		this.spare = null;
	}
	u32() {
		const s = this.s;
		const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
		const t = s[1] << 9;
		s[2] ^= s[0];
		s[3] ^= s[1];
		s[1] ^= s[2];
		s[0] ^= s[3];
		s[2] ^= t;
		s[3] = rotl(s[3], 11);
		return r;
	}
	uniform() { // [0, 1)
		return this.u32() / 4294967296;
	}
	range(lo, hi) {
		return lo + (hi - lo) * this.uniform();
	}
	int(lo, hi) { // [lo, hi]
		return lo + Math.floor(this.uniform() * (hi - lo + 1));
	}
	normal() { // Box-Muller, both deviates used
		if (this.spare !== null) {
			const v = this.spare;
			this.spare = null;
			return v;
		}
		let u = 0;
		while (u === 0) u = this.uniform();
		const v = this.uniform();
		const r = Math.sqrt(-2 * Math.log(u));
		this.spare = r * Math.sin(2 * Math.PI * v);
		return r * Math.cos(2 * Math.PI * v);
	}
}

function rotl(x, k) {
	return ((x << k) | (x >>> (32 - k))) >>> 0;
}

// ---- generators: each returns a typed array of prod(shape) elements ----
const numel = (shape) => shape.reduce((a, b) => a * b, 1);
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

// Synthetic text: light paper with a soft gradient and grain, dark glyphs
// made of strokes (bars, hooks, boxes, diagonals) along text lines. Drawn
// as 0..255 RGB, then normalised as PaddleOCR's preprocessing does.
function genOcrImage(g, shape) {
	const [N, C, H, W] = shape;
	if (C !== 3) die('ocr_image wants 3 channels');
	const out = new Float32Array(numel(shape));
	for (let n = 0; n < N; n++) {
		const rng = new Rng(g.seed + 7919 * n);
		const gray = new Float32Array(H * W); // ink coverage 0..1
		const paper = [rng.range(228, 248), rng.range(226, 244), rng.range(215, 238)];
		const ink = [rng.range(15, 60), rng.range(15, 60), rng.range(25, 90)];
		const inkW = g.layout === 'line' ? Math.min(W, g.ink_width || W) : W;
		const fill = (x0, y0, x1, y1) => {
			x0 = Math.max(0, Math.round(x0)); y0 = Math.max(0, Math.round(y0));
			x1 = Math.min(inkW, Math.round(x1)); y1 = Math.min(H, Math.round(y1));
			for (let y = y0; y < y1; y++)
				for (let x = x0; x < x1; x++) gray[y * W + x] = 1;
		};
		const glyph = (x, y, w, h) => {
			const t = Math.max(1, Math.round(h / rng.range(6, 9)));
			const strokes = rng.int(2, 4);
			for (let s = 0; s < strokes; s++) {
				switch (rng.int(0, 4)) {
				case 0: { const yy = y + rng.range(0, h - t); fill(x, yy, x + w, yy + t); break; }
				case 1: { const xx = x + rng.range(0, w - t); fill(xx, y, xx + t, y + h); break; }
				case 2: fill(x, y, x + w, y + t); fill(x, y, x + t, y + h); fill(x + w - t, y, x + w, y + h); break;
				case 3: { // diagonal
					const steps = Math.ceil(Math.max(w, h));
					const dir = rng.uniform() < 0.5;
					for (let i = 0; i <= steps; i++) {
						const xx = x + (w - t) * i / steps, yy = y + (dir ? i : steps - i) * (h - t) / steps;
						fill(xx, yy, xx + t, yy + t);
					}
					break;
				}
				default: { const xx = x + rng.range(0, w / 2), yy = y + rng.range(0, h / 2);
					fill(xx, yy, xx + w / 2, yy + t); fill(xx, yy, xx + t, yy + h / 2); }
				}
			}
		};
		const textLine = (x0, x1, yc, h) => {
			let x = x0;
			while (x < x1) {
				const w = h * rng.range(0.55, 1.0);
				if (x + w > x1) break;
				if (rng.uniform() < 0.12) { x += w * 0.6; continue; } // a space
				glyph(x, yc - h / 2 + rng.range(-h * 0.05, h * 0.05), w, h);
				x += w + h * rng.range(0.1, 0.25);
			}
		};
		if (g.layout === 'page') {
			const s = Math.min(H, W) / 640;
			let y = rng.range(20, 50) * s;
			while (y < H - 20 * s) {
				const h = rng.range(14, 36) * s;
				const x0 = rng.range(10, W * 0.3), x1 = rng.range(x0 + W * 0.2, W - 10);
				textLine(x0, x1, y + h / 2, h);
				y += h * rng.range(1.6, 3.2);
			}
			// a table rule and a box, as on forms and receipts
			fill(W * 0.05, H * 0.8, W * 0.9, H * 0.8 + Math.max(1, 2 * s));
			fill(W * 0.6, H * 0.1, W * 0.6 + Math.max(1, 2 * s), H * 0.3);
		} else if (g.layout === 'line') {
			const h = H * rng.range(0.55, 0.7);
			textLine(rng.range(1, 4), inkW - 2, H / 2, h);
		} else die(`unknown ocr_image layout '${g.layout}'`);

		const gx = rng.range(-8, 8), gy = rng.range(-8, 8);
		for (let c = 0; c < 3; c++) {
			for (let y = 0; y < H; y++) {
				for (let x = 0; x < W; x++) {
					const i = y * W + x;
					let v;
					if (x >= inkW) {
						v = null; // padding
					} else {
						const bg = paper[c] + gx * (x / W - 0.5) + gy * (y / H - 0.5);
						v = clamp(bg + (ink[c] - bg) * gray[i] + 3 * rng.normal(), 0, 255);
					}
					let f;
					if (v === null) f = 0;
					else if (g.norm === 'det') {
						const mean = [0.485, 0.456, 0.406][c], std = [0.229, 0.224, 0.225][c];
						f = (v / 255 - mean) / std;
					} else if (g.norm === 'rec') f = (v / 255 - 0.5) / 0.5;
					else die(`unknown ocr_image norm '${g.norm}'`);
					out[((n * 3 + c) * H + y) * W + x] = f;
				}
			}
		}
	}
	return out;
}

// Voiced-speech-like audio: harmonics of a gliding fundamental, a syllable
// envelope, a near-silent lead-in of lead_s seconds and noise; peak =
// amplitude.
function audioSignal(g, total) {
	const rng = new Rng(g.seed);
	const rate = g.rate;
	const f0 = rng.range(110, 260), glide = rng.range(-0.2, 0.2);
	const syl = rng.range(3, 5), sylPhase = rng.range(0.2, 0.8);
	const nh = 6, amps = [], phases = [];
	for (let k = 0; k < nh; k++) {
		amps.push(rng.range(0.4, 1) / (k + 1));
		phases.push(rng.range(0, 2 * Math.PI));
	}
	const lead = Math.round((g.lead_s || 0) * rate);
	const x = new Float64Array(total);
	let ph = 0, peak = 0;
	for (let i = 0; i < total; i++) {
		const t = i / rate;
		const f = f0 * (1 + glide * Math.sin(2 * Math.PI * 0.7 * t)) * (1 + 0.02 * Math.sin(2 * Math.PI * 5.5 * t));
		ph += 2 * Math.PI * f / rate;
		let v = 0;
		for (let k = 0; k < nh; k++) {
			if ((k + 1) * f >= rate / 2) break;
			v += amps[k] * Math.sin((k + 1) * ph + phases[k]);
		}
		// syllables from the end of the lead-in on, rising at once; a
		// breathy floor in the pauses between them
		const env = i < lead ? 0 : 0.05 + 0.95 *
			Math.pow(Math.max(0, Math.sin(2 * Math.PI * syl * (i - lead) / rate + sylPhase)), 0.6);
		x[i] = v * env;
		peak = Math.max(peak, Math.abs(x[i]));
	}
	const a = g.amplitude;
	for (let i = 0; i < total; i++)
		x[i] = clamp(a * x[i] / (peak || 1) + 0.01 * a * rng.normal(), -1, 1);
	return x;
}

function scaleAudio(g, x) {
	const out = new Float32Array(x.length);
	for (let i = 0; i < x.length; i++)
		out[i] = g.scale === 'int16' ? clamp(Math.round(x[i] * 32767), -32768, 32767) : x[i];
	if (g.scale !== 'int16' && g.scale !== 'unit') die(`unknown audio scale '${g.scale}'`);
	return out;
}

function genMelFeatures(g, shape) {
	const [B, T, M] = shape;
	const out = new Float32Array(numel(shape));
	for (let b = 0; b < B; b++) {
		const rng = new Rng(g.seed + 104729 * b);
		const ph = rng.range(0, 2 * Math.PI), per = rng.range(12, 24);
		for (let t = 0; t < T; t++)
			for (let m = 0; m < M; m++) {
				const v = 7.5 + 1.6 * Math.sin(2 * Math.PI * t / per + m / 5 + ph) * Math.cos(m / 7)
					- 1.5 * m / M + 0.4 * rng.normal();
				out[(b * T + t) * M + m] = clamp(v, 4, 11.5);
			}
	}
	return out;
}

// Per-dimension offsets plus AR(1) variation over time (rho 0.8, scaled so
// its stationary deviation is sd too).
function genEmbeddings(g, shape) {
	const D = shape[shape.length - 1], T = numel(shape) / D;
	const rng = new Rng(g.seed);
	const sd = g.sd === undefined ? 8 : g.sd;
	const bias = [], prev = new Float64Array(D);
	for (let d = 0; d < D; d++) {
		bias.push(sd * rng.normal());
		prev[d] = sd * rng.normal();
	}
	const out = new Float32Array(numel(shape));
	for (let t = 0; t < T; t++)
		for (let d = 0; d < D; d++) {
			if (t) prev[d] = 0.8 * prev[d] + 0.6 * sd * rng.normal();
			out[t * D + d] = clamp(bias[d] + prev[d], -45, 45);
		}
	return out;
}

// Returns a function step -> typed array for one input.
function makeInput(inp, steps) {
	const g = inp.gen, n = numel(inp.shape);
	const typed = (arr) => {
		if (inp.dtype === 'float32') return Float32Array.from(arr);
		if (inp.dtype === 'int64') return BigInt64Array.from(arr, (v) => BigInt(v));
		die(`dtype ${inp.dtype} has no generator`);
	};
	switch (g.kind) {
	case 'const': {
		const v = typed(new Array(n).fill(g.value));
		return () => v;
	}
	case 'audio': {
		if (inp.dtype !== 'float32') die('audio wants float32');
		// context: each chunk starts with the last `context` samples of the
		// previous one (zeros before the first), as Silero v5/v6 want them
		// (silero-vad's OnnxWrapper, vad-web's models/silero.js).
		const ctx = g.context || 0, hop = n - ctx;
		if (ctx && (!g.stream || hop <= 0)) die(`input ${inp.name}: context needs stream and a longer chunk`);
		const total = g.stream ? hop * steps : n;
		const sig = scaleAudio(g, audioSignal(g, total));
		if (!g.stream) return () => sig;
		return (k) => {
			const out = new Float32Array(n);
			for (let i = 0; i < n; i++) {
				const j = k * hop - ctx + i;
				out[i] = j >= 0 ? sig[j] : 0;
			}
			return out;
		};
	}
	case 'ocr_image': { const v = genOcrImage(g, inp.shape); return () => v; }
	case 'mel_features': { const v = genMelFeatures(g, inp.shape); return () => v; }
	case 'embeddings': { const v = genEmbeddings(g, inp.shape); return () => v; }
	default:
		die(`unknown generator '${g.kind}' for input ${inp.name}`);
	}
	return null;
}

// ---- .npy writer (format 1.0, byte for byte numpy 1.24's np.save) ----
const NPY_DESCR = { float32: '<f4', float64: '<f8', int64: '<i8', int32: '<i4', bool: '|b1', uint8: '|u1', int8: '|i1' };

function npyBytes(type, dims, data) {
	const descr = NPY_DESCR[type];
	if (!descr) die(`cannot write dtype ${type} as .npy`);
	const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(', ')})`;
	let h = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
	if (dims.length) h += ' '.repeat(21 - String(dims[0]).length);
	const hlen = h.length + 1;
	const pad = 64 - ((10 + hlen) % 64);
	h += ' '.repeat(pad) + '\n';
	const head = Buffer.alloc(10 + h.length);
	head.write('\x93NUMPY', 0, 'latin1');
	head[6] = 1;
	head[7] = 0;
	head.writeUInt16LE(h.length, 8);
	head.write(h, 10, 'latin1');
	let body;
	if (type === 'bool') body = Buffer.from(Uint8Array.from(data, (v) => (v ? 1 : 0)));
	else body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
	return Buffer.concat([head, body]);
}

const fileName = (name) => name.replace(/[^A-Za-z0-9._-]/g, '_');
// Manifest tokens: names percent-encoded outside [A-Za-z0-9._:/-]
const enc = (s) => Buffer.from(s, 'utf8').reduce((a, b) => {
	const c = String.fromCharCode(b);
	return a + (/[A-Za-z0-9._:\/-]/.test(c) ? c : '%' + b.toString(16).padStart(2, '0').toUpperCase());
}, '');

function checkCase(c) {
	if (!/^[A-Za-z0-9_.-]+$/.test(c.name || '')) die(`bad case name '${c.name}'`);
	if (!c.model || !Array.isArray(c.inputs) || !c.inputs.length) die(`case ${c.name}: model and inputs required`);
	for (const i of c.inputs)
		if (!i.name || !Array.isArray(i.shape) || !i.dtype || !i.gen) die(`case ${c.name}: input needs name, shape, dtype, gen`);
}

async function runCase(c, args, lines) {
	const steps = c.steps || 1;
	const carry = c.carry || {};
	const seq = steps > 1;
	const modelPath = path.join(args.models, c.model);
	if (!fs.existsSync(modelPath)) die(`case ${c.name}: no model ${modelPath}`);
	const dir = path.join(args.out, c.name);
	fs.mkdirSync(path.join(dir, 'in'), { recursive: true });
	fs.mkdirSync(path.join(dir, 'out'), { recursive: true });
	const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
		logSeverityLevel: c.expect_error ? 4 : 3 };
	const sess = await ort.InferenceSession.create(modelPath, opts);
	for (const i of c.inputs)
		if (!sess.inputNames.includes(i.name)) die(`case ${c.name}: model has no input '${i.name}' (has ${sess.inputNames.join(', ')})`);
	for (const [o, i] of Object.entries(carry))
		if (!sess.outputNames.includes(o) || !sess.inputNames.includes(i)) die(`case ${c.name}: bad carry ${o} -> ${i}`);

	lines.push(`case ${c.name}`);
	lines.push(`model ${enc(c.model)}`);
	lines.push(`threads ${(c.threads || [1]).join(' ')}`);
	lines.push(`steps ${steps}`);
	for (const [o, i] of Object.entries(carry)) lines.push(`carry ${enc(o)} ${enc(i)}`);

	const gens = c.inputs.map((i) => makeInput(i, steps));
	let carried = {};
	const prefix = (k) => (seq ? String(k).padStart(2, '0') + '_' : '');
	for (let k = 0; k < steps; k++) {
		lines.push(`step ${k}`);
		const feeds = {};
		c.inputs.forEach((inp, j) => {
			const t = k > 0 && carried[inp.name] ? carried[inp.name]
				: new ort.Tensor(inp.dtype, gens[j](k), inp.shape);
			feeds[inp.name] = t;
			const f = `${c.name}/in/${prefix(k)}${fileName(inp.name)}.npy`;
			fs.writeFileSync(path.join(args.out, f), npyBytes(t.type, t.dims, t.data));
			lines.push(`in ${enc(inp.name)} ${enc(f)}`);
		});
		let res;
		try {
			res = await sess.run(feeds);
		} catch (e) {
			if (!c.expect_error) die(`case ${c.name} step ${k}: ONNX Runtime failed: ${e.message}`);
			if (e.message.trim() !== c.expect_error.trim())
				die(`case ${c.name}: ONNX Runtime failed as expected but with another message:\n  got:  ${e.message}\n  case: ${c.expect_error}`);
			lines.push(`error ${enc(e.message.trim())}`);
			continue;
		}
		if (c.expect_error) die(`case ${c.name}: ONNX Runtime accepted an input the case says it rejects`);
		for (const name of sess.outputNames) {
			const t = res[name];
			const f = `${c.name}/out/${prefix(k)}${fileName(name)}.npy`;
			fs.writeFileSync(path.join(args.out, f), npyBytes(t.type, t.dims, t.data));
			lines.push(`out ${enc(name)} ${enc(f)}`);
		}
		carried = {};
		for (const [o, i] of Object.entries(carry)) carried[i] = res[o];
	}
	lines.push('end');
	if (typeof sess.release === 'function') await sess.release();
}

function fnv1a64(buf) {
	let h = 0xcbf29ce484222325n;
	for (const b of buf) {
		h ^= BigInt(b);
		h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
	}
	return h.toString(16).padStart(16, '0');
}

async function main() {
	const args = parseArgs(process.argv);
	const raw = fs.readFileSync(args.cases);
	let doc;
	try {
		doc = JSON.parse(raw.toString('utf8'));
	} catch (e) {
		die(`${args.cases}: ${e.message}`);
	}
	if (doc.format !== 1 || !Array.isArray(doc.cases)) die(`${args.cases}: want format 1 with a cases array`);
	const names = new Set();
	for (const c of doc.cases) {
		checkCase(c);
		if (names.has(c.name)) die(`duplicate case ${c.name}`);
		names.add(c.name);
	}
	fs.mkdirSync(args.out, { recursive: true });
	const lines = [
		'# aidos golden manifest: written by tools/ort_ref.js, read by tests/test_golden.c.',
		'# Tokens are space-separated, names percent-encoded; paths relative to this folder,',
		'# models relative to $AIDOS_CACHE/models. Generated from tests/golden/cases.json.',
		'aidos-golden 1',
		`cases_fnv1a64 ${fnv1a64(raw)}`,
		`ort ${ort.env.versions ? ort.env.versions.node : 'unknown'}`,
	];
	for (const c of doc.cases) {
		if (args.only && c.name !== args.only) continue;
		const t0 = Date.now();
		await runCase(c, args, lines);
		if (!args.quiet) console.log(`  ${c.name}: ${Date.now() - t0} ms`);
	}
	lines.push('');
	fs.writeFileSync(path.join(args.out, 'manifest.txt'), lines.join('\n'));
}

main().catch((e) => die(e.stack || String(e)));
