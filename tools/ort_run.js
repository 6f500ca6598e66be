#!/usr/bin/env node
// tools/ort_run.js - ONNX Runtime's outputs for inputs stored as .npy files.
//
//   node tools/ort_run.js DIR
//
// DIR/cases.txt lists cases, one "<model> <case>" a line; for each, runs
// DIR/<model>.onnx in onnxruntime-node (CPU, 1 intra-op and 1 inter-op
// thread, default graph optimisation) on DIR/cases/<model>/<case>/in/<input>.npy
// and writes DIR/cases/<model>/<case>/out/<output>.npy. One session per
// model, as a server would hold it. Test tooling (tools/gen_transformers.py
// writes the models and inputs; tools/fetch-models.sh calls both).
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const ort = createRequire(path.join(__dirname, 'npm', 'package.json'))('onnxruntime-node');

function die(msg) {
	console.error(`ort_run: error: ${msg}`);
	process.exit(1);
}

// numpy .npy format 1.0 (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
// magic, version, little-endian u16 header length, a Python dict literal.
const DESCR = { '<f4': ['float32', Float32Array], '<i8': ['int64', BigInt64Array] };

function readNpy(file) {
	const b = fs.readFileSync(file);
	if (b.toString('latin1', 0, 6) !== '\x93NUMPY' || b[6] !== 1) die(`${file}: not a .npy 1.x file`);
	const hlen = b.readUInt16LE(8);
	const hdr = b.toString('latin1', 10, 10 + hlen);
	const descr = /'descr':\s*'([^']+)'/.exec(hdr);
	const shape = /'shape':\s*\(([^)]*)\)/.exec(hdr);
	if (!descr || !shape || !DESCR[descr[1]] || /'fortran_order':\s*True/.test(hdr))
		die(`${file}: unsupported header ${hdr}`);
	const dims = shape[1].split(',').map((x) => x.trim()).filter((x) => x).map(Number);
	const [type, Arr] = DESCR[descr[1]];
	const n = dims.reduce((a, c) => a * c, 1);
	const off = 10 + hlen;
	const data = new Arr(b.buffer.slice(b.byteOffset + off, b.byteOffset + off + n * Arr.BYTES_PER_ELEMENT));
	return new ort.Tensor(type, data, dims);
}

function writeNpy(file, t) {
	const descr = Object.keys(DESCR).find((k) => DESCR[k][0] === t.type);
	if (!descr) die(`cannot write ${t.type}`);
	const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
	let hdr = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
	hdr += ' '.repeat(63 - ((10 + hdr.length) % 64)) + '\n';
	const head = Buffer.alloc(10);
	head.write('\x93NUMPY', 0, 'latin1');
	head[6] = 1;
	head[7] = 0;
	head.writeUInt16LE(hdr.length, 8);
	const body = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
	fs.writeFileSync(file, Buffer.concat([head, Buffer.from(hdr, 'latin1'), body]));
}

async function main() {
	const dir = process.argv[2];
	if (!dir || process.argv.length !== 3) die('usage: ort_run.js DIR');
	const lines = fs.readFileSync(path.join(dir, 'cases.txt'), 'utf8').split('\n').filter((l) => l.trim());
	const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionProviders: ['cpu'] };
	const sessions = {};
	for (const line of lines) {
		const [model, c] = line.trim().split(/\s+/);
		if (!sessions[model])
			sessions[model] = await ort.InferenceSession.create(path.join(dir, `${model}.onnx`), opts);
		const sess = sessions[model];
		const cdir = path.join(dir, 'cases', model, c);
		const feeds = {};
		for (const name of sess.inputNames) feeds[name] = readNpy(path.join(cdir, 'in', `${name}.npy`));
		const res = await sess.run(feeds);
		fs.mkdirSync(path.join(cdir, 'out'), { recursive: true });
		for (const name of sess.outputNames) writeNpy(path.join(cdir, 'out', `${name}.npy`), res[name]);
	}
}

main().catch((e) => die(e.message));
