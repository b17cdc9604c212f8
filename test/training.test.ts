import { TEMP_DIR } from './helpers/env';
import { watchEventLoop } from './helpers/event-loop';
import { withoutOnnxRuntime } from './helpers/no-onnxruntime';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { classify, predictHead, tf, trainHead, useBackend, type Head, type TrainingProgress } from '../engine';
import { DEFAULT_TRAINING } from '../engine/head/head';
import { seededRandom, shuffleInPlace } from '../engine/head/random';
import { openProducts, type SoftmaxProducts } from '../engine/head/products';
import { lbfgs, parameterCount, softmaxLogits, softmaxLoss, type SoftmaxProblem } from '../engine/head/solver';
import { train } from '../engine/head/train';
import { percentile } from '../scripts/percentile';

/** Gaussian blobs, one per class, `separation` apart along the class's own axis. */
function blobs(counts: Record<string, number>, dims: number, seed: number, separation = 3, noise = 0.7) {
	const random = seededRandom(seed);
	const gaussian = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
	const features: Float32Array[] = [];
	const labels: string[] = [];
	Object.entries(counts).forEach(([label, n], c) => {
		for (let i = 0; i < n; i++) {
			features.push(Float32Array.from({ length: dims }, (_, d) => (d === c % dims ? separation : 0) + gaussian() * noise));
			labels.push(label);
		}
	});
	return { features, labels };
}

test('training runs off the event loop and reports each epoch', async () => {
	// Big enough to hold a core for well over a second.
	const { features, labels } = blobs({ a: 400, b: 400, c: 400 }, 512, 1, 1, 1);
	const progress: TrainingProgress[] = [];
	const loop = watchEventLoop(5);
	const started = performance.now();
	const result = await trainHead(features, labels, { hiddenUnits: 64, epochs: 30, patience: 100 }, (p) => progress.push(p));
	const seconds = (performance.now() - started) / 1000;
	const { gaps, maxGapMs: maxLagMs } = await loop.stop();
	console.log(`# ${seconds.toFixed(1)} s of training; longest gap between 5 ms timer ticks ${maxLagMs.toFixed(0)} ms, p99 ${percentile(gaps, 99).toFixed(0)} ms`);
	assert.ok(seconds > 1, `training took only ${seconds} s: too short to tell`);
	// Synchronous training held the loop for the whole run (seconds); on a busy machine the
	// scheduler alone leaves gaps of a hundred milliseconds or two now and then.
	assert.ok(maxLagMs < 500, `the event loop was held for ${maxLagMs} ms`);
	const search = progress.filter((p) => p.phase === 'search');
	const final = progress.filter((p) => p.phase === 'final');
	assert.deepEqual(search.map((p) => p.epoch), result.history.map((h) => h.epoch));
	assert.deepEqual(final.map((p) => p.epoch), Array.from({ length: result.finalEpochs }, (_, i) => i + 1));
	assert.ok(progress.every((p) => Number.isFinite(p.loss) && p.epochs >= p.epoch));
	assert.ok(search.every((p) => p.validationLoss !== undefined) && final.every((p) => p.validationLoss === undefined));
});

test('the same examples in another order train the same head', async () => {
	const { features, labels } = blobs({ cat: 25, dog: 25, fox: 25 }, 8, 2, 2);
	const order = shuffleInPlace(features.map((_, i) => i), seededRandom(99));
	const first = await trainHead(features, labels, { seed: 5 });
	const shuffled = await trainHead(order.map((i) => features[i]), order.map((i) => labels[i]), { seed: 5 });
	assert.deepEqual(shuffled.head, first.head);
	assert.deepEqual(shuffled.metrics, first.metrics);
	assert.deepEqual(shuffled.history, first.history);
});

test('the history holds every epoch, the one that stopped training included', async () => {
	const { features, labels } = blobs({ a: 30, b: 30 }, 8, 3);
	const result = await trainHead(features, labels, { epochs: 500, patience: 4, learningRate: 0.05, solver: 'miniBatch' });
	assert.ok(result.history.length < 500, 'early stopping fired');
	assert.deepEqual(result.history.map((h) => h.epoch), Array.from({ length: result.history.length }, (_, i) => i + 1));
	assert.equal(result.history.at(-1)!.epoch, result.bestEpoch + 4);
	// The best epoch's validation loss is the lowest recorded.
	const best = result.history[result.bestEpoch - 1].validationLoss!;
	assert.ok(result.history.every((h) => h.validationLoss! >= best - 1e-4));
});

test('the counts say what each figure was measured on', async () => {
	const { features, labels } = blobs({ a: 20, b: 20, c: 20 }, 8, 4);
	const split = await trainHead(features, labels, { epochs: 20, patience: 100, solver: 'miniBatch' });
	assert.equal(split.evaluatedOn, 'validation');
	assert.equal(split.validationCount, 12);
	assert.equal(split.trainCount, 48);
	assert.equal(split.metrics.count, split.validationCount, 'metrics are validation metrics');
	assert.equal(split.finalTrainCount, 60, 'the saved head learned from every example');
	assert.equal(split.finalEpochs, 2 * split.bestEpoch);
	const whole = await trainHead(features, labels, { epochs: 20, validationSplit: 0, solver: 'miniBatch' });
	assert.equal(whole.evaluatedOn, 'training');
	assert.deepEqual([whole.trainCount, whole.validationCount, whole.finalTrainCount, whole.finalEpochs, whole.metrics.count], [60, 0, 60, 20, 60]);
});

test('labels that Classify could not route are refused, naming the label', async () => {
	const { features } = blobs({ a: 2, b: 2 }, 4, 5);
	const expect = async (labels: string[], message: RegExp, hint: RegExp) =>
		assert.rejects(trainHead(features, labels), (e: Error & { hint?: string }) => {
			assert.match(e.message, message);
			assert.match(e.hint ?? '', hint);
			return true;
		});
	await expect(['cat', 'cat', 'unknown', 'unknown'], /Example 2 has the label "unknown", which cannot be used: "unknown" is reserved/, /Rename that class/);
	await expect(['cat', 'cat', 'red, white', 'red, white'], /Example 2 has the label "red, white", which cannot be used: it holds a comma/, /Class Names are separated by commas/);
	await expect(['cat', '', 'dog', 'dog'], /Example 1 has the label "", which cannot be used: it is empty/, /Rename that class/);
	await expect(['cat', 'cat', '  ', 'dog'], /Example 2 has the label "  ", which cannot be used: it is empty/, /Rename that class/);
});

test('balanced class weights keep a rare class from being ignored; without them it mostly is', async () => {
	// Overlapping classes, 10 to 1: unweighted, the boundary moves towards the rare class.
	const { features, labels } = blobs({ common: 100, rare: 10 }, 2, 4, 1.5, 1);
	const fresh = blobs({ common: 0, rare: 300 }, 2, 104, 1.5, 1).features;
	const recall = async (classWeights: 'balanced' | 'none') => {
		const { head } = await trainHead(features, labels, { validationSplit: 0, epochs: 60, dropout: 0, learningRate: 0.01, classWeights });
		return classify(head, fresh).filter((p) => p.label === 'rare').length / fresh.length;
	};
	const balanced = await recall('balanced');
	const none = await recall('none');
	console.log(`# recall of the rare class: balanced ${balanced.toFixed(2)}, none ${none.toFixed(2)}`);
	assert.ok(balanced >= 0.7, `balanced recall ${balanced}`);
	assert.ok(none <= 0.6, `unweighted recall ${none}`);
});

/** A two-layer head with fixed random weights. */
function randomHead(seed: number): Head {
	const random = seededRandom(seed);
	const values = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (random() * 2 - 1) * scale);
	return {
		labels: ['a', 'b', 'c'],
		featureSize: 6,
		mean: values(6),
		std: values(6).map((v) => 1 + Math.abs(v)),
		layers: [
			{ units: 4, activation: 'relu', kernel: values(24), bias: values(4, 0.1) },
			{ units: 3, activation: 'softmax', kernel: values(12), bias: values(3, 0.1) },
		],
	};
}

test('predictHead in plain JS gives what TF.js computes', async () => {
	const head = randomHead(6);
	const inputs = Array.from({ length: 5 }, (_, i) => Float32Array.from({ length: 6 }, (_, j) => Math.sin(i * 6 + j)));
	await useBackend('cpu');
	const expected = tf.tidy(() => {
		let x = tf.div<tf.Tensor2D>(tf.sub(tf.tensor2d(inputs.map((f) => Array.from(f))), head.mean), head.std);
		x = tf.relu(tf.add<tf.Tensor2D>(tf.matMul(x, tf.tensor2d(head.layers[0].kernel, [6, 4])), head.layers[0].bias));
		return tf.softmax(tf.add<tf.Tensor2D>(tf.matMul(x, tf.tensor2d(head.layers[1].kernel, [4, 3])), head.layers[1].bias)).arraySync() as number[][];
	});
	predictHead(head, inputs).forEach((p, i) => p.forEach((v, j) => assert.ok(Math.abs(v - expected[i][j]) < 1e-6, `${i},${j}: ${v} vs ${expected[i][j]}`)));
});

test('a head classifies in a process where no TF.js backend was ever initialised', () => {
	// What Classify meets after an n8n restart when the backbone runs on ONNX Runtime.
	const file = path.join(TEMP_DIR, 'head.json');
	const head = randomHead(7);
	writeFileSync(file, JSON.stringify(head, (_, v) => (v instanceof Float32Array ? Array.from(v) : v)));
	const script = `
		const { classify } = require(${JSON.stringify(path.join(__dirname, '..', 'engine'))});
		const h = JSON.parse(require('fs').readFileSync(${JSON.stringify(file)}, 'utf8'));
		for (const k of ['mean', 'std']) h[k] = Float32Array.from(h[k]);
		for (const l of h.layers) { l.kernel = Float32Array.from(l.kernel); l.bias = Float32Array.from(l.bias); }
		console.log(JSON.stringify(classify(h, [new Float32Array(6).fill(0.5)])[0]));`;
	const output = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
	const [expected] = classify(head, [new Float32Array(6).fill(0.5)]);
	assert.equal(output.label, expected.label);
	assert.ok(Math.abs(output.confidence - expected.confidence) < 1e-7);
});

test('trainings beyond one per spare core wait their turn, and all finish', async () => {
	const limit = Math.max(1, os.availableParallelism() - 1);
	const { features, labels } = blobs({ a: 200, b: 200 }, 64, 2);
	// A training is running from its first epoch until its promise settles.
	let running = 0;
	let most = 0;
	const results = await Promise.all(
		Array.from({ length: limit + 2 }, async (_, k) => {
			let started = false;
			const result = await trainHead(features, labels, { epochs: 40, patience: 100, learningRate: 0.05, seed: k }, () => {
				if (!started) (started = true), (most = Math.max(most, ++running));
			});
			running--;
			return result;
		}),
	);
	assert.ok(most <= limit, `${most} trainings ran at once, ${limit} allowed`);
	assert.ok(most >= Math.min(2, limit), 'trainings overlap where the limit allows');
	// Well separated blobs: every training learnt them.
	for (const result of results) assert.ok(result.metrics.accuracy > 0.9, `accuracy ${result.metrics.accuracy}`);
});

/**
 * A script for `node -e` that has trainHead and 1000 examples of 1280 features in two classes,
 * seeded by the expression `seed` (large enough that ONNX Runtime computes for most of a
 * training), then runs `body`.
 */
function largeTrainingScript(seed: string, body: string): string {
	return `const { trainHead } = require(${JSON.stringify(path.join(__dirname, '..', 'engine'))});
		const random = require(${JSON.stringify(path.join(__dirname, '..', 'engine', 'head', 'random'))}).seededRandom(${seed});
		const labels = Array.from({ length: 1000 }, (_, i) => (i % 2 ? 'a' : 'b'));
		const features = labels.map((_, i) => Float32Array.from({ length: 1280 }, (_, j) => random() + (j === i % 2 ? 1 : 0)));
		${body}`;
}

test('trainings stopped while ONNX Runtime computes their products, by a throwing onProgress or an aborted signal, reject without taking the process down', async () => {
	// Ending the worker at once aborted the process within three trainings of 1000 x 1280 ("terminate
	// called after throwing an instance of 'Napi::Error'"): a child process shows it as its exit code.
	const script = largeTrainingScript('45', `(async () => {
			const outcomes = [];
			for (let k = 0; k < 20; k++) {
				const controller = new AbortController();
				const listener = k % 2 ? () => controller.abort(new Error('execution stopped')) : () => { throw new Error('progress listener failed'); };
				outcomes.push(await trainHead(features, labels, { seed: k }, listener, undefined, controller.signal).then((r) => 'trained ' + r.solver.runtime, (e) => e.message));
			}
			const early = new AbortController();
			early.abort(new Error('stopped before it started'));
			outcomes.push(await trainHead(features, labels, {}, undefined, undefined, early.signal).then(() => 'trained', (e) => e.message));
			// The slots those trainings held are free again.
			const after = await trainHead(features.slice(0, 100), labels.slice(0, 100), { seed: 1 });
			outcomes.push('trained ' + after.solver.runtime);
			console.log(JSON.stringify(outcomes));
		})();`);
	const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { env: { ...process.env, TL_BACKEND: 'auto' } });
	assert.deepEqual(JSON.parse(stdout), [
		...Array.from({ length: 20 }, (_, k) => (k % 2 ? 'execution stopped' : 'progress listener failed')),
		'stopped before it started',
		'trained onnxruntime',
	]);
});

test('a process that exits while a training computes on ONNX Runtime ends with its own exit code, not an abort', async () => {
	// As n8n does when its shutdown timeout passes with a training running. Before the gate in
	// engine/head/control.ts, 2 of 5 such exits aborted ("terminate called after throwing an
	// instance of 'Napi::Error'", exit code 134).
	const script = largeTrainingScript('Number(process.argv[1])', 'trainHead(features, labels, {}, () => setImmediate(() => process.exit(3)));');
	const exits = await Promise.all(
		Array.from({ length: 2 }, async (_, lane) => {
			const codes: string[] = [];
			for (let k = 0; k < 5; k++) {
				const child = spawn(process.execPath, ['-e', script, String(lane * 5 + k)], { env: { ...process.env, TL_BACKEND: 'auto' }, stdio: ['ignore', 'ignore', 'pipe'] });
				let stderr = '';
				child.stderr.on('data', (chunk) => (stderr += chunk));
				const [code, signal] = await once(child, 'exit');
				codes.push(`${code ?? signal}${stderr.includes('terminate called') ? ' (aborted)' : ''}`);
			}
			return codes;
		}),
	);
	assert.deepEqual(exits.flat(), Array(10).fill('3'));
});

/** A softmax problem on blobs, rows weighted equally. */
function softmaxProblem(seed: number, counts: Record<string, number> = { a: 40, b: 40, c: 40 }, inputs = 6): SoftmaxProblem {
	const { features, labels } = blobs(counts, inputs, seed, 1.2, 1);
	const classes = Object.keys(counts).sort();
	return {
		x: Float64Array.from(features.flatMap((f) => Array.from(f))),
		inputs,
		classes: classes.length,
		target: Int32Array.from(labels.map((l) => classes.indexOf(l))),
		weight: new Float64Array(labels.length).fill(1 / labels.length),
	};
}

test('the softmax loss gradient is the derivative of the loss, with odd and even class counts and a partial last block of rows; ONNX Runtime gives the same', async () => {
	const problems = [softmaxProblem(11), softmaxProblem(12, { a: 10, b: 11, c: 9, d: 13 })];
	for (const problem of problems) checkGradient(problem);
	// The products on ONNX Runtime against the JS kernels, both in float64 (summed in another order),
	// on these and on a problem of a backbone's width.
	const products = await openProducts();
	try {
		assert.equal(products.runtime, 'onnxruntime');
		for (const problem of [...problems, softmaxProblem(13, { a: 150, b: 170, c: 140, d: 160, e: 155 }, 1280)]) await checkProducts(products, problem);
	} finally {
		await products.release();
	}
});

async function checkProducts(products: SoftmaxProducts, problem: SoftmaxProblem): Promise<void> {
	const random = seededRandom(4);
	const w = Float64Array.from({ length: parameterCount(problem) }, () => (random() - 0.5) / Math.sqrt(problem.inputs));
	const expected = new Float64Array(w.length);
	const expectedLoss = softmaxLoss(problem, 0.05, w, expected);
	// Whatever the gradient held before is overwritten.
	const gradient = new Float64Array(w.length).fill(NaN);
	const loss = await products.loss(problem, 0.05, w, gradient);
	const what = `${problem.target.length} x ${problem.inputs} -> ${problem.classes}`;
	assert.ok(Math.abs(loss - expectedLoss) < 1e-12 * expectedLoss, `${what}: loss ${loss}, JS ${expectedLoss}`);
	const largest = Math.max(...expected.map(Math.abs));
	expected.forEach((g, j) => assert.ok(Math.abs(gradient[j] - g) < 1e-12 * largest, `${what}, parameter ${j}: ${gradient[j]}, JS ${g}`));
	const logits = await products.logits(problem, w);
	softmaxLogits(problem, w).forEach((z, i) => assert.ok(Math.abs(logits[i] - z) < 1e-12 * (1 + Math.abs(z)), `${what}, logit ${i}: ${logits[i]}, JS ${z}`));
}

function checkGradient(problem: SoftmaxProblem): void {
	const random = seededRandom(3);
	const w = Float64Array.from({ length: parameterCount(problem) }, () => random() - 0.5);
	const gradient = new Float64Array(w.length);
	softmaxLoss(problem, 0.05, w, gradient);
	const scratch = new Float64Array(w.length);
	for (let j = 0; j < w.length; j++) {
		const h = 1e-6;
		const plus = Float64Array.from(w);
		const minus = Float64Array.from(w);
		plus[j] += h;
		minus[j] -= h;
		const numeric = (softmaxLoss(problem, 0.05, plus, scratch) - softmaxLoss(problem, 0.05, minus, scratch)) / (2 * h);
		assert.ok(Math.abs(numeric - gradient[j]) < 1e-6, `${problem.classes} classes, parameter ${j}: analytic ${gradient[j]}, numeric ${numeric}`);
	}
}

test('L-BFGS finds the minimum: Rosenbrock at (1, 1), and the softmax loss below a long gradient descent', async () => {
	const rosenbrock = (w: Float64Array, g: Float64Array) => {
		const [x, y] = w;
		g[0] = -2 * (1 - x) - 400 * x * (y - x * x);
		g[1] = 200 * (y - x * x);
		return (1 - x) ** 2 + 100 * (y - x * x) ** 2;
	};
	const point = Float64Array.from([-1.2, 1]);
	await lbfgs(rosenbrock, point, { maxIterations: 500, gradientTolerance: 1e-8 });
	assert.ok(Math.abs(point[0] - 1) < 1e-4 && Math.abs(point[1] - 1) < 1e-4, `ended at ${point[0]}, ${point[1]}`);

	const problem = softmaxProblem(12);
	const solved = new Float64Array(parameterCount(problem));
	const { loss, iterations } = await lbfgs((w, g) => softmaxLoss(problem, 0.01, w, g), solved, { maxIterations: 200, gradientTolerance: 1e-7 });
	// 20,000 steps of plain gradient descent on the same convex objective, for reference.
	const descended = new Float64Array(solved.length);
	const g = new Float64Array(solved.length);
	let reference = Infinity;
	for (let step = 0; step < 20_000; step++) {
		reference = softmaxLoss(problem, 0.01, descended, g);
		for (let j = 0; j < descended.length; j++) descended[j] -= 0.5 * g[j];
	}
	console.log(`# softmax loss: L-BFGS ${loss.toFixed(8)} in ${iterations} iterations, gradient descent ${reference.toFixed(8)} in 20000 steps`);
	assert.ok(iterations < 200, 'L-BFGS converged before its limit');
	assert.ok(loss <= reference + 1e-7, `L-BFGS ${loss} above gradient descent ${reference}`);
	assert.ok(Math.abs(loss - reference) < 1e-5, 'both reached the same minimum');
});

test('the full-batch solver is deterministic per seed and picks the candidate with the lowest validation loss', async () => {
	const { features, labels } = blobs({ a: 40, b: 40, c: 40 }, 32, 8, 1, 1.5);
	const first = await trainHead(features, labels, { seed: 3 });
	const again = await trainHead(features, labels, { seed: 3 });
	assert.deepEqual(again.head, first.head);
	assert.deepEqual(again.solver, first.solver);
	assert.equal(first.solver.method, 'lbfgs');
	if (first.solver.method !== 'lbfgs') return;
	const { candidates } = first.solver;
	assert.deepEqual(candidates.map((c) => [c.l2, c.l2Normalize]), [[0.1, true], [0.01, true], [0.001, true]], 'three strengths, on unit-length inputs');
	const lowest = candidates.reduce((best, c) => (c.validationLoss < best.validationLoss ? c : best));
	assert.equal(first.solver.l2, lowest.l2);
	assert.equal(first.solver.l2Normalize, true);
	assert.equal(first.solver.chosenBy, 'validation');
	assert.deepEqual(first.history.map((h) => [h.l2, h.l2Normalize, h.validationLoss]), candidates.map((c) => [c.l2, c.l2Normalize, c.validationLoss]));
	assert.equal(first.history[first.bestEpoch - 1].validationLoss, lowest.validationLoss);
	// Another seed holds out other examples: the figures it chose on differ.
	const other = await trainHead(features, labels, { seed: 4 });
	assert.notDeepEqual(other.history.map((h) => h.validationLoss), first.history.map((h) => h.validationLoss));
	// Unit-length vectors already are left as they are.
	const unit = features.map((f) => f.map((v) => v / Math.hypot(...f)));
	const normalised = await trainHead(unit, labels, { seed: 3 });
	assert.deepEqual(normalised.solver.method === 'lbfgs' && normalised.solver.candidates.map((c) => c.l2Normalize), [false, false, false]);
});

test('the full-batch solver chooses on validation: heavy label noise calls for the strongest regularisation', async () => {
	// Many dimensions, few examples and a third of the labels flipped: a weakly regularised fit
	// memorises the noise, which the validation split shows.
	const { features, labels } = blobs({ a: 30, b: 30 }, 200, 21, 0.6, 1);
	const random = seededRandom(5);
	const noisy = labels.map((l) => (random() < 0.33 ? (l === 'a' ? 'b' : 'a') : l));
	const result = await trainHead(features, noisy, { seed: 1, validationSplit: 0.4 });
	assert.equal(result.solver.method, 'lbfgs');
	if (result.solver.method !== 'lbfgs') return;
	const byStrength = (l2: number) => result.solver.method === 'lbfgs' && result.solver.candidates.filter((c) => c.l2 === l2).map((c) => c.validationLoss);
	console.log(`# validation losses by L2 strength: ${JSON.stringify(result.solver.candidates.map((c) => [c.l2, c.l2Normalize, +c.validationLoss.toFixed(3)]))}`);
	assert.equal(result.solver.l2, Math.max(...result.solver.candidates.map((c) => c.l2)));
	assert.ok(Math.min(...(byStrength(0.1) as number[])) < Math.min(...(byStrength(0.001) as number[])));
});

test('the full-batch solver learns augmented views with their example, and keeps them off the validation split', async () => {
	const { features, labels } = blobs({ a: 20, b: 20 }, 8, 31, 2);
	const views = features.map((f) => [f.map((v) => v + 0.01), f.map((v) => v - 0.01)]);
	const result = await trainHead(features, labels, { seed: 2 }, undefined, views);
	assert.equal(result.viewsPerExample, 2);
	assert.equal(result.validationCount, 8, 'the split counts examples, not views');
	assert.equal(result.metrics.count, 8, 'only the examples themselves are scored');
	assert.ok(result.metrics.accuracy >= 0.9);
	await assert.rejects(trainHead(features, labels, {}, undefined, views.slice(1)), /views and features differ/);
});

test('a head that chose unit-length inputs normalises what it classifies', () => {
	const head: Head = { ...randomHead(9), l2Normalize: true };
	const input = [Float32Array.from([1, 2, 3, 4, 5, 6])];
	const scaled = [input[0].map((v) => v * 7)];
	assert.deepEqual(predictHead(head, scaled), predictHead(head, input));
});

test('the training worker, started once per training, loads neither sharp nor zod', () => {
	// Loading them through head.ts cost each training 80-160 ms before its first step.
	const worker = path.join(__dirname, '..', 'engine', 'head', 'train.js');
	const script = `require(${JSON.stringify(worker)}); console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /node_modules[\\\\/](sharp|zod)[\\\\/]/.test(f))))`;
	const loaded = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[];
	assert.deepEqual(loaded, []);
});

/** `TL_BACKEND` for the trainings `run` starts (a worker reads the environment as it starts). */
async function withBackend<T>(backend: string, run: () => Promise<T>): Promise<T> {
	const before = process.env.TL_BACKEND;
	process.env.TL_BACKEND = backend;
	try {
		return await run();
	} finally {
		if (before === undefined) delete process.env.TL_BACKEND;
		else process.env.TL_BACKEND = before;
	}
}

test('the full-batch solver on ONNX Runtime and on the JS kernels chooses the same L2 and predicts alike', async () => {
	// Overlapping classes in many dimensions: the candidates' validation losses differ, and the
	// probabilities are far from 0 and 1, where a difference would show.
	const { features, labels } = blobs({ a: 60, b: 70, c: 50, d: 60, e: 60 }, 256, 41, 1, 1.5);
	const onnx = await trainHead(features, labels, { seed: 7 });
	const js = await withBackend('cpu', () => trainHead(features, labels, { seed: 7 }));
	assert.ok(onnx.solver.method === 'lbfgs' && js.solver.method === 'lbfgs');
	assert.deepEqual([onnx.solver.runtime, js.solver.runtime], ['onnxruntime', 'js']);
	assert.equal(onnx.solver.l2, js.solver.l2);
	const jsCandidates = js.solver.candidates;
	onnx.solver.candidates.forEach((c, i) => assert.ok(Math.abs(c.validationLoss - jsCandidates[i].validationLoss) < 1e-9 * jsCandidates[i].validationLoss, `L2 ${c.l2}: ${c.validationLoss}, JS ${jsCandidates[i].validationLoss}`));
	const fresh = blobs({ a: 40, b: 40, c: 40, d: 40, e: 40 }, 256, 42, 1, 1.5).features;
	const [p, q] = [onnx.head, js.head].map((head) => predictHead(head, fresh));
	let largest = 0;
	p.forEach((row, i) => row.forEach((v, c) => (largest = Math.max(largest, Math.abs(v - q[i][c])))));
	console.log(`# largest difference of a probability between the two heads: ${largest.toExponential(1)}`);
	assert.ok(largest < 1e-6, `probabilities differ by up to ${largest}`);
});

test('where ONNX Runtime does not load (Alpine), the full-batch solver trains on the JS kernels: the head of TL_BACKEND=cpu', async () => {
	const dir = path.join(TEMP_DIR, 'solver-no-ort');
	const preload = withoutOnnxRuntime(dir);
	const { features, labels } = blobs({ a: 30, b: 30, c: 30 }, 16, 43, 1, 1.2);
	const input = path.join(dir, 'examples.json');
	writeFileSync(input, JSON.stringify({ features: features.map((f) => Array.from(f)), labels }));
	const script = `const { trainHead } = require(${JSON.stringify(path.join(__dirname, '..', 'engine'))});
		const { features, labels } = JSON.parse(require('fs').readFileSync(${JSON.stringify(input)}, 'utf8'));
		trainHead(features.map((f) => Float32Array.from(f)), labels, { seed: 3 }).then((r) => console.log(JSON.stringify({ solver: r.solver, head: r.head }, (_, v) => (v instanceof Float32Array ? Array.from(v) : v))));`;
	const { stdout } = await promisify(execFile)(process.execPath, ['--require', preload, '-e', script], { env: { ...process.env, TL_BACKEND: 'auto' } });
	const fallback = JSON.parse(stdout);
	assert.equal(fallback.solver.runtime, 'js');
	const js = await withBackend('cpu', () => trainHead(features, labels, { seed: 3 }));
	assert.deepEqual(fallback, JSON.parse(JSON.stringify({ solver: js.solver, head: js.head }, (_, v) => (v instanceof Float32Array ? Array.from(v) : v))));
});

test('a training releases the ONNX Runtime sessions it opened, also when it fails', async () => {
	const { features, labels } = blobs({ a: 20, b: 20 }, 8, 44);
	const classes = ['a', 'b'];
	let opened = 0;
	let released = 0;
	const open = async () => {
		const products = await openProducts();
		assert.equal(products.runtime, 'onnxruntime');
		opened++;
		const release = products.release.bind(products);
		products.release = () => (released++, release());
		return products;
	};
	await train(features, labels, classes, { ...DEFAULT_TRAINING }, undefined, [], open);
	await assert.rejects(
		train(features, labels, classes, { ...DEFAULT_TRAINING }, (p) => {
			if (p.phase === 'final') throw new Error('stopped');
		}, [], open),
		/stopped/,
	);
	assert.deepEqual([opened, released], [2, 2]);
});
