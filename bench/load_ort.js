#!/usr/bin/env node
// bench/load_ort.js MODEL... - ONNX Runtime's session creation time per model
// (onnxruntime-node from tools/npm, CPU, default graph optimisation, 1 thread):
// prints one JSON line per model {"model", "create_ms": [runs...]}.
'use strict';
const path = require('path');
const { createRequire } = require('module');
const ort = createRequire(path.join(__dirname, '..', 'tools', 'npm', 'package.json'))('onnxruntime-node');
const runs = Number(process.env.RUNS || 7);
(async () => {
	for (const m of process.argv.slice(2)) {
		const t = [];
		for (let i = 0; i < runs; i++) {
			const t0 = process.hrtime.bigint();
			const s = await ort.InferenceSession.create(m, { intraOpNumThreads: 1, interOpNumThreads: 1 });
			t.push(Number(process.hrtime.bigint() - t0) / 1e6);
			await s.release();
		}
		console.log(JSON.stringify({ model: m, create_ms: t }));
	}
})().catch((e) => { console.error(`load_ort: ${e.message}`); process.exit(1); });
