import { DATASETS_DIR, REPO_ROOT } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

/**
 * Accuracy on real data through the evaluation command itself (its output is a contract other
 * checks parse): train on `train`, score on `test`, with the mirror's real backbones.
 */
async function evaluate(dataset: string, backbone: string) {
	const { stdout } = await promisify(execFile)(
		process.execPath,
		[path.join(REPO_ROOT, 'dist', 'scripts', 'eval.js'), '--data', path.join(DATASETS_DIR, dataset), '--backbone', backbone, '--json'],
		{ env: process.env, maxBuffer: 1 << 20 },
	);
	const last = stdout.trim().split('\n').pop()!;
	return JSON.parse(last) as { accuracy: number; macroF1: number; backbone: string; trainCount: number; testCount: number };
}

const targets: [string, string, number][] = [
	['flowers5', 'mobilenet_v1_0.25_224', 0.78],
	['cats_vs_dogs', 'mobilenet_v1_0.25_224', 0.9],
	['flowers5', 'mobilenet_v1_0.75_224', 0.8],
];

for (const [dataset, backbone, target] of targets) {
	test(`${dataset} with ${backbone}: test accuracy >= ${target}`, async () => {
		const result = await evaluate(dataset, backbone);
		console.log(`# ${dataset} ${backbone}: accuracy ${result.accuracy.toFixed(3)}, macro-F1 ${result.macroF1.toFixed(3)}`);
		assert.equal(result.backbone, backbone);
		assert.equal(result.trainCount + result.testCount, dataset === 'flowers5' ? 400 : 200);
		assert.ok(result.macroF1 > 0 && result.macroF1 <= 1);
		assert.ok(result.accuracy >= target, `accuracy ${result.accuracy} < ${target}`);
	});
}
