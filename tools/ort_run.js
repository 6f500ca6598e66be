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

const npy = require(path.join(__dirname, 'npy.js'));
const readNpy = (file) => npy.readNpy(file, ort);
const { writeNpy } = npy;

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
