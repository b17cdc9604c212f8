import { DATASETS_DIR, REPO_ROOT } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

const SEEDS = 3;

/**
 * Accuracy on real data through the evaluation command itself (its output is a contract other
 * checks parse): train on `train`, score on `test`, with the mirror's real backbones, averaged
 * over several seeds: one run moves by an image or two with the seed.
 */
async function evaluate(dataset: string, backbone: string, more: string[] = []) {
	const { stdout } = await promisify(execFile)(
		process.execPath,
		[path.join(REPO_ROOT, 'dist', 'scripts', 'eval.js'), '--data', path.join(DATASETS_DIR, dataset), '--backbone', backbone, '--seeds', String(SEEDS), '--json', ...more],
		{ env: process.env, maxBuffer: 1 << 20 },
	);
	const last = stdout.trim().split('\n').pop()!;
	return JSON.parse(last) as {
		accuracy: number;
		macroF1: number;
		accuracySpread: { min: number; max: number; std: number };
		runs: { seed: number; accuracy: number; trainCount: number }[];
		backbone: string;
		inputSize: number;
		pooling: string;
		backend: string;
		precision: string;
		int8Parity?: { passed: boolean };
		perClass?: number;
		crossValidation?: { folds: number; images: number; accuracy: number; runs: { seed: number; accuracy: number }[] };
		trainCount: number;
		testCount: number;
	};
}

/**
 * Thresholds on the mean of the seeds, under the means of 5 seeds (42-46) measured with
 * `npm run eval -- --seeds 5` (Automatic precision, int8 where it passes its parity check) and the
 * catalog's reading of images for new models (320x320, generalised mean): cats_vs_dogs/v1 0.25
 * 0.983 (sd 0), flowers5/v1 0.25 0.817 (sd 0), flowers5/v1 0.75 0.867 (sd 0); in float32 0.983,
 * 0.843, 0.875. The solver's answer moves only when another validation split makes it choose
 * another strength; the mini-batch trainer's single runs had a standard deviation of 0.014-0.017,
 * which the margins also cover.
 */
const targets: [string, string, number][] = [
	['flowers5', 'mobilenet_v1_0.25_224', 0.77],
	['cats_vs_dogs', 'mobilenet_v1_0.25_224', 0.95],
	['flowers5', 'mobilenet_v1_0.75_224', 0.84],
];

for (const [dataset, backbone, target] of targets) {
	test(`${dataset} with ${backbone}: mean test accuracy over ${SEEDS} seeds >= ${target}`, async () => {
		const result = await evaluate(dataset, backbone);
		const { min, max, std } = result.accuracySpread;
		console.log(`# ${dataset} ${backbone}: accuracy ${result.accuracy.toFixed(3)} (seeds ${result.runs.map((r) => `${r.seed}: ${r.accuracy.toFixed(3)}`).join(', ')}; min ${min.toFixed(3)}, max ${max.toFixed(3)}, sd ${std.toFixed(3)}), macro-F1 ${result.macroF1.toFixed(3)}`);
		assert.equal(result.backbone, backbone);
		assert.equal(result.inputSize, 320);
		assert.equal(result.pooling, 'gem');
		assert.equal(result.runs.length, SEEDS);
		assert.equal(result.trainCount + result.testCount, dataset === 'flowers5' ? 400 : 200);
		assert.ok(result.macroF1 > 0 && result.macroF1 <= 1);
		assert.ok(result.accuracy >= target, `mean accuracy ${result.accuracy} < ${target}`);
	});
}

test('models saved before the larger input keep their figure, under what new models reach: cats_vs_dogs with mobilenet_v1_0.25_224 at 224x224 with the average', async () => {
	// 5 seeds: 0.933 with Automatic precision, 0.950 in float32; new models 0.983 either way.
	const earlier = await evaluate('cats_vs_dogs', 'mobilenet_v1_0.25_224', ['--input-size', '224', '--pooling', 'average']);
	assert.equal(earlier.inputSize, 224);
	assert.equal(earlier.pooling, 'average');
	assert.ok(earlier.accuracy >= 0.9, `mean accuracy ${earlier.accuracy}`);
	const current = await evaluate('cats_vs_dogs', 'mobilenet_v1_0.25_224');
	assert.ok(current.accuracy > earlier.accuracy, `${current.accuracy} at 320x320 with the generalised mean, ${earlier.accuracy} at 224x224 with the average`);
});

test('--folds K cross-validates over every image of both splits, once per seed', async () => {
	const result = await evaluate('cats_vs_dogs', 'mobilenet_v1_0.25_224', ['--folds', '4']);
	const cv = result.crossValidation!;
	assert.equal(cv.folds, 4);
	assert.equal(cv.images, 200);
	assert.deepEqual(cv.runs.map((r) => r.seed), result.runs.map((r) => r.seed));
	// 5 seeds of 4 folds measured 0.951 (0.935-0.965) in float32: the cats_vs_dogs test split (0.983) is an easier draw than the average.
	assert.ok(cv.accuracy > 0.9, `cross-validated accuracy ${cv.accuracy}`);
});

test('--per-class N trains each seed on N images of each class of an image dataset', async () => {
	const result = await evaluate('cats_vs_dogs', 'mobilenet_v1_0.25_224', ['--per-class', '5']);
	assert.equal(result.perClass, 5);
	assert.deepEqual(result.runs.map((r) => r.trainCount), new Array(SEEDS).fill(10));
	assert.equal(result.trainCount, 10);
	assert.equal(result.testCount, 60, 'the whole test split is scored');
	assert.ok(['onnxruntime', 'wasm', 'cpu', 'tensorflow'].includes(result.backend));
	// Automatic: int8 where ONNX Runtime runs and its features agreed with float32's on the first batch.
	assert.equal(result.precision, result.backend === 'onnxruntime' && result.int8Parity?.passed ? 'int8' : 'float32');
	// Ten photos still tell cats from dogs far better than chance.
	assert.ok(result.accuracy > 0.7, `accuracy ${result.accuracy}`);
});
