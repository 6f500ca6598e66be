#!/usr/bin/env node
// bench/cpu_ort.js - the ONNX Runtime side of `make bench-cpu` (bench/cpu.sh):
// onnxruntime-node 1.30 (CPU), driven on stdin with the protocol of
// bench/cpu_aidos.c so that bench/cpu.sh interleaves the two:
//   load THREADS MODEL NAME=FILE.npy ...  -> "ok NODES" | "err MESSAGE"
//   run K    -> "lat NS NS ... cpu NS"  (await session.run(feeds), process.hrtime;
//               then the process's CPU time over the K runs, process.cpuUsage)
//   out DIR  -> "ok N"  (DIR/<output name>.npy)
//   overhead K -> "lat NS ..."  an empty setImmediate promise: the part of
//               each ORT latency that is node's, not ORT's
//   quit
// Session options as the issue fixes them: graphOptimizationLevel 'all',
// intraOpNumThreads THREADS, interOpNumThreads 1, executionMode 'sequential'.
// Benchmark tooling; never used by aidos at run time.
'use strict';

const path = require('path');
const readline = require('readline');
const { createRequire } = require('module');

const ort = createRequire(path.join(__dirname, '..', 'tools', 'npm', 'package.json'))('onnxruntime-node');

const npy = require(path.join(__dirname, '..', 'tools', 'npy.js'));
const readNpy = (file) => npy.readNpy(file, ort);
const { writeNpy } = npy;

let session = null;
let feeds = null;
let last = null;

async function load(args) {
	const [threads, model, ...ins] = args;
	if (session) await session.release();
	session = null;
	feeds = {};
	for (const kv of ins) {
		const eq = kv.indexOf('=');
		feeds[kv.slice(0, eq)] = readNpy(kv.slice(eq + 1));
	}
	session = await ort.InferenceSession.create(model, {
		executionProviders: ['cpu'], graphOptimizationLevel: 'all',
		intraOpNumThreads: Number(threads), interOpNumThreads: 1, executionMode: 'sequential',
	});
	last = await session.run(feeds);
	return 'ok 0';
}

async function run(k) {
	const lat = new Array(k);
	const c0 = process.cpuUsage();
	for (let i = 0; i < k; i++) {
		const t0 = process.hrtime.bigint();
		last = await session.run(feeds);
		lat[i] = process.hrtime.bigint() - t0;
	}
	const c = process.cpuUsage(c0);
	return 'lat ' + lat.join(' ') + ' cpu ' + (c.user + c.system) * 1000;
}

async function overhead(k) {
	const lat = new Array(k);
	for (let i = 0; i < k; i++) {
		const t0 = process.hrtime.bigint();
		await new Promise((r) => setImmediate(r));
		lat[i] = process.hrtime.bigint() - t0;
	}
	return 'lat ' + lat.join(' ');
}

async function command(line) {
	const [cmd, ...args] = line.trim().split(/\s+/);
	if (cmd === 'load') return load(args);
	if (cmd === 'run') {
		if (!session) throw new Error('no model loaded');
		return run(Number(args[0]));
	}
	if (cmd === 'overhead') return overhead(Number(args[0]));
	if (cmd === 'out') {
		if (!last) throw new Error('no model loaded');
		for (const name of Object.keys(last)) writeNpy(path.join(args[0], name + '.npy'), last[name]);
		return `ok ${Object.keys(last).length}`;
	}
	throw new Error(`unknown command '${cmd}'`);
}

async function main() {
	const rl = readline.createInterface({ input: process.stdin, terminal: false });
	for await (const line of rl) {
		if (!line.trim()) continue;
		if (line.trim() === 'quit') break;
		let answer;
		try {
			answer = await command(line);
		} catch (e) {
			answer = 'err ' + String(e.message || e).replace(/\n/g, ' ');
		}
		process.stdout.write(answer + '\n');
	}
	if (session) await session.release();
	process.exit(0);
}

main();
