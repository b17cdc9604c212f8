/**
 * Head training in plain JavaScript on typed arrays. A head is one or two small dense layers: a
 * loop over Float32Arrays costs less than TF.js's per-op dispatch, needs no backend, and gives the
 * same numbers on every machine. It runs synchronously, so trainHead calls it in a worker thread.
 */
import type { DenseLayer, EpochRecord, Head, TrainingOptions, TrainingProgress, TrainingResult } from './head';
import { computeMetrics } from './metrics';
import { seededRandom, shuffleInPlace } from './random';
import { fitFullBatch, FULL_BATCH_MAX_ROWS } from './full-batch';
import { openProducts, type SoftmaxProducts } from './products';
import { argMax, predictHead } from './predict';

/**
 * `features` and `labels` are already checked by checkExamples; `classes` is their sorted label
 * set; `views[i]` are extra views of example i (augmentation), trained on with its label. `open`
 * gives the full-batch solver its matrix products; the training releases them when it ends.
 */
export async function train(
	features: Float32Array[],
	labels: string[],
	classes: string[],
	options: TrainingOptions,
	onProgress: (progress: TrainingProgress) => void = () => {},
	views: Float32Array[][] = [],
	open: () => Promise<SoftmaxProducts> = openProducts,
): Promise<TrainingResult> {
	// The same examples in another order must train the same head: the seeded split and shuffles
	// work on rows sorted by content (label, then the feature bytes), not by arrival order.
	const order = labels.map((_, i) => i).sort((a, b) => compareLabels(labels[a], labels[b]) || Buffer.compare(bytes(features[a]), bytes(features[b])));
	features = order.map((i) => features[i]);
	views = views.length ? order.map((i) => views[i]) : [];
	const target = order.map((i) => classes.indexOf(labels[i]));
	const viewsPerExample = views[0]?.length ?? 0;
	const random = seededRandom(options.seed);
	const { train: trainRows, validation } = stratifiedSplit(target, classes.length, options.validationSplit, random);
	const common = {
		examplesPerClass: Object.fromEntries(classes.map((c, i) => [c, target.filter((t) => t === i).length])),
		trainCount: trainRows.length,
		validationCount: validation.length,
		finalTrainCount: validation.length ? target.length : trainRows.length,
		evaluatedOn: validation.length ? ('validation' as const) : ('training' as const),
		options,
		viewsPerExample,
	};
	if (options.solver === 'auto' && options.hiddenUnits === 0 && target.length * (1 + viewsPerExample) <= FULL_BATCH_MAX_ROWS) {
		const products = await open();
		try {
			return { ...common, ...(await fitFullBatch(features, target, classes, trainRows, validation, options, onProgress, views, products)) };
		} finally {
			await products.release();
		}
	}
	// Views become rows of their own, listed with their example's split.
	const exampleCount = features.length;
	const viewRows = (rows: number[]) => rows.flatMap((r) => views[r]?.map((_, j) => exampleCount + r * viewsPerExample + j) ?? []);
	features = [...features, ...views.flat()];
	target.push(...views.flatMap((list, r) => list.map(() => target[r])));
	const { evaluatedHead, ...fitted } = fitMiniBatch(features, target, classes, [...trainRows, ...viewRows(trainRows)], validation, [...target.keys()], options, onProgress, random);
	// Without a validation split the figures are the training examples' own (their views left out).
	const scored = validation.length ? validation : trainRows;
	const predicted = predictHead(evaluatedHead, scored.map((r) => features[r])).map(argMax);
	return { ...common, ...fitted, metrics: computeMetrics(classes, scored.map((r) => target[r]), predicted) };
}

function fitMiniBatch(
	features: Float32Array[],
	target: number[],
	classes: string[],
	trainRows: number[],
	validation: number[],
	everyRow: number[],
	options: TrainingOptions,
	onProgress: (progress: TrainingProgress) => void,
	random: () => number,
) {
	const featureSize = features[0].length;

	const layerSizes = options.hiddenUnits > 0 ? [options.hiddenUnits, classes.length] : [classes.length];
	const initial = initialLayers(featureSize, layerSizes, random);
	const search = fit(features, target, trainRows, validation, initial, options, options.epochs, random, (r) => onProgress({ phase: 'search', epochs: options.epochs, ...r }));
	// The held-out share has done its job once it has picked the epoch count: the shipped head is
	// trained on every example, which matters with the few dozen examples users typically have. It
	// runs twice the chosen epochs and averages the weights of the second half (stochastic weight
	// averaging), so a noisy pick of the epoch count from a small validation set costs little.
	const finalEpochs = 2 * Math.max(1, search.bestEpoch);
	const final = validation.length
		? fit(features, target, everyRow, [], initial, options, finalEpochs, random, (r) => onProgress({ phase: 'final', epochs: finalEpochs, ...r }))
		: search;
	const head: Head = { labels: classes, featureSize, mean: final.mean, std: final.std, layers: final.layers };
	return {
		head,
		/** The validation-split fit's head, which the metrics measure. */
		evaluatedHead: validation.length ? { ...head, mean: search.mean, std: search.std, layers: search.layers } : head,
		history: search.history,
		bestEpoch: search.bestEpoch,
		finalEpochs: validation.length ? finalEpochs : search.history.length,
		solver: { method: 'miniBatchAdam' as const },
	};
}

const compareLabels = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const bytes = (f: Float32Array) => Buffer.from(f.buffer, f.byteOffset, f.byteLength);

/** The trainable state of the head: weights in float64 (they accumulate many small steps), Adam's moments beside them. */
interface Parameter {
	value: Float64Array;
	gradient: Float64Array;
	m: Float64Array;
	v: Float64Array;
}

const parameter = (value: Float64Array): Parameter => ({
	value,
	gradient: new Float64Array(value.length),
	m: new Float64Array(value.length),
	v: new Float64Array(value.length),
});

/** Between a DenseLayer's [rows, columns] kernel and the transposed one training works on. */
function transpose(values: ArrayLike<number>, rows: number, columns: number, out: Float32Array | Float64Array): typeof out {
	for (let r = 0; r < rows; r++) for (let c = 0; c < columns; c++) out[c * rows + r] = values[r * columns + c];
	return out;
}

interface Layer {
	inputs: number;
	units: number;
	/** Transposed: [units, inputs]. */
	kernel: Parameter;
	bias: Parameter;
}

/**
 * Adam on weighted cross-entropy, examples drawn from `rows`. With validation rows it keeps the
 * weights of the epoch with the lowest validation loss and stops after `patience` epochs without
 * improvement; without, it runs all `epochs`.
 */
function fit(
	features: Float32Array[],
	target: number[],
	rows: number[],
	validation: number[],
	initial: DenseLayer[],
	options: TrainingOptions,
	epochs: number,
	random: () => number,
	onEpoch: (record: EpochRecord) => void,
) {
	const classCount = initial[initial.length - 1].units;
	const featureSize = features[0].length;
	const { mean, std } = standardisation(features, rows);
	const classWeight = classWeights(target, rows, classCount, options.classWeights);
	const trainX = standardisedMatrix(features, rows, mean, std);
	const validationX = validation.length ? standardisedMatrix(features, validation, mean, std) : undefined;
	let inputs = featureSize;
	const layers: Layer[] = initial.map((l) => {
		const layer = { inputs, units: l.units, kernel: parameter(transpose(l.kernel, inputs, l.units, new Float64Array(l.kernel.length)) as Float64Array), bias: parameter(Float64Array.from(l.bias)) };
		inputs = l.units;
		return layer;
	});
	// At most 16 steps an epoch: a large training set gets larger batches (and a learning rate
	// scaled to match) instead of more steps, the cost of a step being mostly fixed overhead.
	const batchSize = Math.max(options.batchSize, Math.ceil(rows.length / 16));
	const adam = new Adam(options.learningRate * Math.min(10, batchSize / options.batchSize));
	const history: EpochRecord[] = [];
	let best = { loss: Infinity, epoch: 0, layers: initial };
	let averaged: DenseLayer[] | undefined;
	let averagedEpochs = 0;
	const batchX = new Float32Array(batchSize * featureSize);
	for (let epoch = 1; epoch <= epochs; epoch++) {
		const order = shuffleInPlace([...rows.keys()], random);
		const trained = { loss: 0, correct: 0, weight: 0 };
		for (let start = 0; start < order.length; start += batchSize) {
			const batch = order.slice(start, start + batchSize);
			const x = batchX.subarray(0, batch.length * featureSize);
			batch.forEach((b, i) => x.set(trainX.subarray(b * featureSize, (b + 1) * featureSize), i * featureSize));
			// A linear head drops inputs; a hidden layer drops its outputs, before the softmax layer.
			if (options.dropout > 0 && layers.length === 1) dropout(x, options.dropout, random);
			const mask = options.dropout > 0 && layers.length > 1 ? dropout(new Float32Array(batch.length * layers[0].units).fill(1), options.dropout, random) : undefined;
			const batchScore = step(
				layers,
				x,
				batch.map((b) => target[rows[b]]),
				batch.map((b) => classWeight[target[rows[b]]]),
				mask,
			);
			trained.loss += batchScore.loss;
			trained.correct += batchScore.correct;
			trained.weight += batchScore.weight;
			adam.update(layers.flatMap((l) => [l.kernel, l.bias]));
		}
		// Training loss and accuracy as Keras reports them, over the epoch's batches as trained:
		// scoring the whole training set again would cost as much as the epoch itself.
		const record: EpochRecord = { epoch, loss: trained.loss / trained.weight, accuracy: trained.correct / rows.length };
		let stop = false;
		if (validationX) {
			const v = score(layers, validationX, validation.map((r) => target[r]), classWeight);
			record.validationLoss = v.loss;
			record.validationAccuracy = v.accuracy;
			if (v.loss < best.loss - 1e-4) best = { loss: v.loss, epoch, layers: readLayers(layers, initial) };
			else stop = epoch - best.epoch >= options.patience;
		}
		// The epoch that triggers early stopping was trained and scored: it belongs in the history.
		history.push(record);
		onEpoch(record);
		if (stop) break;
		// Without a validation set (the final fit) the head is the average of the weights over the
		// second half of training: one run's last steps are noisy, their average is not.
		if (!validationX && epoch > epochs / 2) {
			averaged ??= initial.map((l) => ({ ...l, kernel: new Float32Array(l.kernel.length), bias: new Float32Array(l.bias.length) }));
			averagedEpochs++;
			const current = readLayers(layers, initial);
			averaged.forEach((l, i) => {
				for (let j = 0; j < l.kernel.length; j++) l.kernel[j] += current[i].kernel[j];
				for (let j = 0; j < l.bias.length; j++) l.bias[j] += current[i].bias[j];
			});
		}
	}
	if (!validationX) {
		for (const l of averaged!) {
			for (let j = 0; j < l.kernel.length; j++) l.kernel[j] /= averagedEpochs;
			for (let j = 0; j < l.bias.length; j++) l.bias[j] /= averagedEpochs;
		}
		best = { loss: history[history.length - 1].loss, epoch: epochs, layers: averaged! };
	}
	return { mean, std, layers: best.layers, bestEpoch: best.epoch, history };
}

/** tf.train.adam's update, with its defaults (beta1 0.9, beta2 0.999, epsilon 1e-7). */
class Adam {
	private t = 0;

	constructor(private readonly learningRate: number) {}

	update(parameters: Parameter[]): void {
		this.t++;
		const rate = (this.learningRate * Math.sqrt(1 - 0.999 ** this.t)) / (1 - 0.9 ** this.t);
		for (const { value, gradient, m, v } of parameters) {
			for (let j = 0; j < value.length; j++) {
				const g = gradient[j];
				m[j] = 0.9 * m[j] + 0.1 * g;
				v[j] = 0.999 * v[j] + 0.001 * g * g;
				value[j] -= (rate * m[j]) / (Math.sqrt(v[j]) + 1e-7);
			}
		}
	}
}

/**
 * `out[n, units] = x[n, inputs] · kernel + bias`, then ReLU when asked, then times `mask`. The
 * kernel is kept transposed ([units, inputs]) so that each output is a dot product of contiguous
 * arrays, and four rows go through together so that each weight is loaded once for four products.
 */
function dense(x: Float32Array, n: number, layer: Layer, relu: boolean, mask?: Float32Array): Float32Array {
	const { inputs, units } = layer;
	const w = layer.kernel.value;
	const b = layer.bias.value;
	const out = new Float32Array(n * units);
	for (let r = 0; r < n; r += 4) {
		// Past the last row the block repeats it; those results are not written.
		const x0 = r * inputs;
		const x1 = Math.min(r + 1, n - 1) * inputs;
		const x2 = Math.min(r + 2, n - 1) * inputs;
		const x3 = Math.min(r + 3, n - 1) * inputs;
		for (let u = 0; u < units; u++) {
			const col = u * inputs;
			let s0 = 0;
			let s1 = 0;
			let s2 = 0;
			let s3 = 0;
			for (let i = 0; i < inputs; i++) {
				const wi = w[col + i];
				s0 += x[x0 + i] * wi;
				s1 += x[x1 + i] * wi;
				s2 += x[x2 + i] * wi;
				s3 += x[x3 + i] * wi;
			}
			const sums = [s0, s1, s2, s3];
			for (let q = 0; q < 4 && r + q < n; q++) {
				const at = (r + q) * units + u;
				const value = sums[q] + b[u];
				out[at] = (relu && value < 0 ? 0 : value) * (mask ? mask[at] : 1);
			}
		}
	}
	return out;
}

/** Softmax of each row, in place. */
function softmaxRows(logits: Float32Array, n: number, k: number): Float32Array {
	for (let r = 0; r < n; r++) {
		let max = -Infinity;
		for (let c = 0; c < k; c++) max = Math.max(max, logits[r * k + c]);
		let sum = 0;
		for (let c = 0; c < k; c++) sum += logits[r * k + c] = Math.exp(logits[r * k + c] - max);
		for (let c = 0; c < k; c++) logits[r * k + c] /= sum;
	}
	return logits;
}

/** `gradient[units, inputs] = dᵀ · x` (the transposed kernel's gradient), `biasGradient = column sums of d`; four rows at a time. */
function accumulate(layer: Layer, x: Float32Array, d: Float32Array, n: number): void {
	const { inputs, units } = layer;
	const g = layer.kernel.gradient.fill(0);
	const gb = layer.bias.gradient.fill(0);
	for (let r = 0; r < n; r += 4) {
		const x0 = r * inputs;
		const x1 = Math.min(r + 1, n - 1) * inputs;
		const x2 = Math.min(r + 2, n - 1) * inputs;
		const x3 = Math.min(r + 3, n - 1) * inputs;
		for (let u = 0; u < units; u++) {
			// Rows past the last one weigh nothing.
			const d0 = d[r * units + u];
			const d1 = r + 1 < n ? d[(r + 1) * units + u] : 0;
			const d2 = r + 2 < n ? d[(r + 2) * units + u] : 0;
			const d3 = r + 3 < n ? d[(r + 3) * units + u] : 0;
			// A dropped or inactive hidden unit passes no gradient.
			if (d0 === 0 && d1 === 0 && d2 === 0 && d3 === 0) continue;
			gb[u] += d0 + d1 + d2 + d3;
			const col = u * inputs;
			for (let i = 0; i < inputs; i++) g[col + i] += d0 * x[x0 + i] + d1 * x[x1 + i] + d2 * x[x2 + i] + d3 * x[x3 + i];
		}
	}
}

/**
 * Forward and back-propagation of the weighted cross-entropy for one batch; leaves the gradients
 * in the layers and returns the batch's weighted loss and correct count, as trained (with dropout).
 */
function step(layers: Layer[], x: Float32Array, target: number[], weights: number[], hiddenMask?: Float32Array) {
	const n = target.length;
	const last = layers[layers.length - 1];
	const k = last.units;
	const hidden = layers.length > 1 ? dense(x, n, layers[0], true, hiddenMask) : undefined;
	const input = hidden ?? x;
	const probabilities = softmaxRows(dense(input, n, last, false), n, k);
	const totalWeight = weights.reduce((a, b) => a + b, 0);
	let loss = 0;
	let correct = 0;
	for (let r = 0; r < n; r++) {
		const p = probabilities.subarray(r * k, (r + 1) * k);
		loss -= weights[r] * Math.log(Math.max(p[target[r]], 1e-30));
		if (argMax(p) === target[r]) correct++;
	}
	// d(loss)/d(logits) = (p - y) * w / sum(w), in place of the probabilities.
	const dLogits = probabilities;
	for (let r = 0; r < n; r++) {
		dLogits[r * k + target[r]] -= 1;
		for (let c = 0; c < k; c++) dLogits[r * k + c] *= weights[r] / totalWeight;
	}
	accumulate(last, input, dLogits, n);
	if (hidden) {
		const h = layers[0].units;
		const w = last.kernel.value;
		const dPre = new Float32Array(n * h);
		for (let r = 0; r < n; r++) {
			for (let j = 0; j < h; j++) {
				// A unit that was dropped or not active (ReLU at 0) passes no gradient.
				if (hidden[r * h + j] === 0) continue;
				let sum = 0;
				for (let c = 0; c < k; c++) sum += dLogits[r * k + c] * w[c * h + j];
				dPre[r * h + j] = sum * (hiddenMask ? hiddenMask[r * h + j] : 1);
			}
		}
		accumulate(layers[0], x, dPre, n);
	}
	return { loss, correct, weight: totalWeight };
}

/** Weighted cross-entropy and accuracy of the current weights on a standardised matrix. */
function score(layers: Layer[], x: Float32Array, target: number[], classWeight: number[]) {
	const n = target.length;
	let logits = x;
	layers.forEach((l, i) => (logits = dense(logits, n, l, i < layers.length - 1)));
	const k = layers[layers.length - 1].units;
	let loss = 0;
	let totalWeight = 0;
	let correct = 0;
	for (let r = 0; r < n; r++) {
		const row = logits.subarray(r * k, (r + 1) * k);
		let max = -Infinity;
		for (const v of row) max = Math.max(max, v);
		let sum = 0;
		for (const v of row) sum += Math.exp(v - max);
		const w = classWeight[target[r]];
		loss += w * (max + Math.log(sum) - row[target[r]]);
		totalWeight += w;
		if (argMax(row) === target[r]) correct++;
	}
	return { loss: loss / totalWeight, accuracy: correct / n };
}

function readLayers(layers: Layer[], initial: DenseLayer[]): DenseLayer[] {
	return layers.map((l, i) => ({
		units: l.units,
		activation: initial[i].activation,
		kernel: transpose(l.kernel.value, l.units, l.inputs, new Float32Array(l.kernel.value.length)) as Float32Array,
		bias: Float32Array.from(l.bias.value),
	}));
}

function initialLayers(featureSize: number, sizes: number[], random: () => number): DenseLayer[] {
	let inputs = featureSize;
	return sizes.map((units, i) => {
		const layer = glorotDense(inputs, units, i === sizes.length - 1 ? 'softmax' : 'relu', random);
		inputs = units;
		return layer;
	});
}

function stratifiedSplit(target: number[], classCount: number, share: number, random: () => number) {
	const train: number[] = [];
	const validation: number[] = [];
	for (let c = 0; c < classCount; c++) {
		const members = shuffleInPlace(target.flatMap((t, i) => (t === c ? [i] : [])), random);
		// At least one held out when asked, and at least one kept for training.
		const held = share > 0 ? Math.min(members.length - 1, Math.max(1, Math.round(members.length * share))) : 0;
		validation.push(...members.slice(0, held));
		train.push(...members.slice(held));
	}
	return { train: train.sort((a, b) => a - b), validation: validation.sort((a, b) => a - b) };
}

function standardisation(features: Float32Array[], rows: number[]) {
	const d = features[0].length;
	const mean = new Float32Array(d);
	const std = new Float32Array(d);
	for (const r of rows) for (let j = 0; j < d; j++) mean[j] += features[r][j] / rows.length;
	for (const r of rows) for (let j = 0; j < d; j++) std[j] += (features[r][j] - mean[j]) ** 2 / rows.length;
	// Features that never vary (dead ReLUs) get unit scale instead of a division by zero.
	for (let j = 0; j < d; j++) std[j] = Math.sqrt(std[j]) > 1e-6 ? Math.sqrt(std[j]) : 1;
	return { mean, std };
}

function standardisedMatrix(features: Float32Array[], rows: number[], mean: Float32Array, std: Float32Array): Float32Array {
	const d = mean.length;
	const out = new Float32Array(rows.length * d);
	rows.forEach((r, i) => {
		for (let j = 0; j < d; j++) out[i * d + j] = (features[r][j] - mean[j]) / std[j];
	});
	return out;
}

function classWeights(target: number[], train: number[], classCount: number, mode: TrainingOptions['classWeights']): number[] {
	if (mode === 'none') return new Array(classCount).fill(1);
	const counts = new Array(classCount).fill(0);
	for (const r of train) counts[target[r]]++;
	return counts.map((n) => train.length / (classCount * n));
}

function glorotDense(inputs: number, units: number, activation: DenseLayer['activation'], random: () => number): DenseLayer {
	const limit = Math.sqrt(6 / (inputs + units));
	const kernel = new Float32Array(inputs * units);
	for (let i = 0; i < kernel.length; i++) kernel[i] = (random() * 2 - 1) * limit;
	return { units, activation, kernel, bias: new Float32Array(units) };
}

/**
 * Inverted dropout, in place: each value is zeroed with probability `rate` (in steps of 1/256)
 * or scaled up to keep the expectation. One 32-bit draw of a xorshift generator, seeded from the
 * run's generator, decides four values: with 1280 features a draw per value cost more than the
 * rest of the training step.
 */
function dropout(values: Float32Array, rate: number, random: () => number): Float32Array {
	const threshold = Math.round(rate * 256);
	const keep = 256 / (256 - threshold);
	let state = (Math.floor(random() * 2 ** 32) | 1) >>> 0;
	const n = values.length;
	for (let i = 0; i < n; i += 4) {
		state ^= state << 13;
		state ^= state >>> 17;
		state ^= state << 5;
		values[i] = (state & 255) < threshold ? 0 : values[i] * keep;
		if (i + 1 < n) values[i + 1] = ((state >>> 8) & 255) < threshold ? 0 : values[i + 1] * keep;
		if (i + 2 < n) values[i + 2] = ((state >>> 16) & 255) < threshold ? 0 : values[i + 2] * keep;
		if (i + 3 < n) values[i + 3] = state >>> 24 < threshold ? 0 : values[i + 3] * keep;
	}
	return values;
}
