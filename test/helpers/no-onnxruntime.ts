import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * A script for `node --require` that makes `require('onnxruntime-node')` fail as its glibc binary
 * does on musl (Alpine); worker threads inherit it. Written into `dir`; returns its path.
 */
export function withoutOnnxRuntime(dir: string): string {
	mkdirSync(dir, { recursive: true });
	const preload = path.join(dir, 'preload.js');
	writeFileSync(
		preload,
		`const Module = require('node:module');
		const resolve = Module._resolveFilename;
		Module._resolveFilename = function (request, ...rest) {
			if (request === 'onnxruntime-node') throw new Error('Error relocating onnxruntime_binding.node: __memcpy_chk: symbol not found');
			return resolve.call(this, request, ...rest);
		};`,
	);
	return preload;
}
