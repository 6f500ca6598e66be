// tools/npy.js - numpy .npy files for the Node.js tools that drive ONNX
// Runtime (tools/ort_run.js, bench/cpu_ort.js): format 1.x/2.x
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
// magic, version, little-endian header length (u16; u32 from 2.0), a Python
// dict literal, then the data in C order. Errors are thrown, naming the file.
'use strict';

const fs = require('fs');

const DESCR = {
	'<f4': ['float32', Float32Array], '<i8': ['int64', BigInt64Array],
	'<i4': ['int32', Int32Array], '|u1': ['uint8', Uint8Array], '|b1': ['bool', Uint8Array],
};

// The tensor in FILE as an ort.Tensor (ort: the onnxruntime-node module).
function readNpy(file, ort) {
	const b = fs.readFileSync(file);
	if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
	const v2 = b[6] >= 2;
	const hlen = v2 ? b.readUInt32LE(8) : b.readUInt16LE(8);
	const off = (v2 ? 12 : 10) + hlen;
	const hdr = b.toString('latin1', off - hlen, off);
	const descr = /'descr':\s*'([^']+)'/.exec(hdr);
	const shape = /'shape':\s*\(([^)]*)\)/.exec(hdr);
	if (!descr || !shape || !DESCR[descr[1]] || /'fortran_order':\s*True/.test(hdr))
		throw new Error(`${file}: unsupported header ${hdr}`);
	const dims = shape[1].split(',').map((x) => x.trim()).filter((x) => x).map(Number);
	const [type, Arr] = DESCR[descr[1]];
	const n = dims.reduce((a, c) => a * c, 1);
	const data = new Arr(b.buffer.slice(b.byteOffset + off, b.byteOffset + off + n * Arr.BYTES_PER_ELEMENT));
	return new ort.Tensor(type, type === 'bool' ? Uint8Array.from(data) : data, dims);
}

// Writes tensor T (type, dims, data) to FILE as .npy 1.0.
function writeNpy(file, t) {
	const descr = Object.keys(DESCR).find((k) => DESCR[k][0] === t.type);
	if (!descr) throw new Error(`cannot write ${t.type}`);
	const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
	let hdr = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
	hdr += ' '.repeat(63 - ((10 + hdr.length) % 64)) + '\n';
	const head = Buffer.alloc(10);
	head.write('\x93NUMPY', 0, 'latin1');
	head[6] = 1;
	head.writeUInt16LE(hdr.length, 8);
	const body = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
	fs.writeFileSync(file, Buffer.concat([head, Buffer.from(hdr, 'latin1'), body]));
}

module.exports = { readNpy, writeNpy };
