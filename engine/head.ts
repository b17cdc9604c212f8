import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from './backend';
import { TransferLearningError } from './errors';
import { computeMetrics, type Metrics } from './metrics';
import { seededRandom, shuffleInPlace } from './random';
import type { BackendChoice } from './settings';

export interface TrainingOptions {
	/** Upper bound; early stopping usually ends sooner. */
	epochs: number;
	batchSize: number;
	learningRate: number;
	/** 0: a linear softmax head. Otherwise one ReLU layer of this width before it. */
	hiddenUnits: number;
	/** Dropout before the softmax layer, while training only. */
	dropout: number;
	/** Share of each class held out to pick the best epoch and report metrics. 0 turns it off. */
	validationSplit: number;
	/** Epochs without improvement of the monitored loss before stopping. */
	patience: number;
	/** `balanced` weighs each class inversely to its count, so a rare class still counts. */
	classWeights: 'balanced' | 'none';
	seed: number;
}

export const DEFAULT_TRAINING: TrainingOptions = {
	epochs: 100,
	batchSize: 16,
	learningRate: 0.001,
	hiddenUnits: 0,
	dropout: 0.5,
	validationSplit: 0.2,
	patience: 10,
	classWeights: 'balanced',
	seed: 42,
};

export const MIN_EXAMPLES_PER_CLASS = 2;

export interface DenseLayer {
	units: number;
	activation: 'relu' | 'softmax';
	/** Row-major [inputs, units]. */
	kernel: Float32Array;
	bias: Float32Array;
}

/** A trained classifier head: standardise the features, then the dense layers. */
export interface Head {
	labels: string[];
	featureSize: number;
	mean: Float32Array;
	std: Float32Array;
	layers: DenseLayer[];
}

export interface EpochRecord {
	epoch: number;
	loss: number;
	accuracy: number;
	validationLoss?: number;
	validationAccuracy?: number;
}

export interface TrainingResult {
	head: Head;
	/** On the validation examples when there are any, else on the training examples. */
	metrics: Metrics;
	evaluatedOn: 'validation' | 'training';
	history: EpochRecord[];
	bestEpoch: number;
	examplesPerClass: Record<string, number>;
	trainCount: number;
	validationCount: number;
	options: TrainingOptions;
}

export function validateTrainingOptions(options: TrainingOptions): void {
	const check = (ok: boolean, what: string) => {
		if (!ok) throw new TransferLearningError(`Training option ${what}`);
	};
	check(Number.isInteger(options.epochs) && options.epochs >= 1 && options.epochs <= 10_000, `"epochs" must be a whole number from 1 to 10000, got ${options.epochs}`);
	check(Number.isInteger(options.batchSize) && options.batchSize >= 1, `"batch size" must be a whole number of at least 1, got ${options.batchSize}`);
	check(options.learningRate > 0 && options.learningRate < 10, `"learning rate" must be above 0 and below 10, got ${options.learningRate}`);
	check(Number.isInteger(options.hiddenUnits) && options.hiddenUnits >= 0 && options.hiddenUnits <= 4096, `"hidden units" must be a whole number from 0 to 4096, got ${options.hiddenUnits}`);
	check(options.dropout >= 0 && options.dropout < 1, `"dropout" must be from 0 up to (not including) 1, got ${options.dropout}`);
	check(options.validationSplit >= 0 && options.validationSplit < 1, `"validation split" must be from 0 up to (not including) 1, got ${options.validationSplit}`);
	check(Number.isInteger(options.patience) && options.patience >= 1, `"patience" must be a whole number of at least 1, got ${options.patience}`);
	check(options.classWeights === 'balanced' || options.classWeights === 'none', `"class weights" must be balanced or none`);
	check(Number.isInteger(options.seed), `"seed" must be a whole number, got ${options.seed}`);
}

/** Trains a softmax head on feature vectors, on the given (or configured) backend. */
export async function trainHead(
	features: Float32Array[],
	labels: string[],
	partial: Partial<TrainingOptions> = {},
	backend?: BackendChoice,
): Promise<TrainingResult> {
	const options: TrainingOptions = { ...DEFAULT_TRAINING, ...partial };
	validateTrainingOptions(options);
	const classes = checkExamples(features, labels);
	await useBackend(backend);
	const featureSize = features[0].length;
	const random = seededRandom(options.seed);
	const target = labels.map((l) => classes.indexOf(l));
	const { train, validation } = stratifiedSplit(target, classes.length, options.validationSplit, random);

	const layerSizes = options.hiddenUnits > 0 ? [options.hiddenUnits, classes.length] : [classes.length];
	const initial = initialLayers(featureSize, layerSizes, random);
	const search = fit(features, target, train, validation, initial, options, options.epochs, random);
	// The held-out share has done its job once it has picked the epoch count: the shipped head is
	// trained on every example, which matters with the few dozen examples users typically have. It
	// runs twice the chosen epochs and averages the weights of the second half (stochastic weight
	// averaging), so a noisy pick of the epoch count from a small validation set costs little.
	const final = validation.length ? fit(features, target, [...train, ...validation].sort((a, b) => a - b), [], initial, options, 2 * Math.max(1, search.bestEpoch), random) : search;
	const head: Head = { labels: classes, featureSize, mean: final.mean, std: final.std, layers: final.layers };
	const evaluatedOn = validation.length ? 'validation' : 'training';
	const evaluated = validation.length ? validation : train;
	const evaluatedHead = validation.length ? { ...head, mean: search.mean, std: search.std, layers: search.layers } : head;
	const predicted = predictHead(evaluatedHead, evaluated.map((r) => features[r])).map(argMax);
	const examplesPerClass = Object.fromEntries(classes.map((c, i) => [c, target.filter((t) => t === i).length]));
	return {
		head,
		metrics: computeMetrics(classes, evaluated.map((r) => target[r]), predicted),
		evaluatedOn,
		history: search.history,
		bestEpoch: search.bestEpoch,
		examplesPerClass,
		trainCount: train.length,
		validationCount: validation.length,
		options,
	};
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
) {
	const classCount = initial[initial.length - 1].units;
	const featureSize = features[0].length;
	const { mean, std } = standardisation(features, rows);
	const classWeight = classWeights(target, rows, classCount, options.classWeights);
	const matrix = (subset: number[]) => concat(subset.map((r) => standardise(features[r], mean, std)), featureSize);
	const trainData = matrix(rows);
	const trainX = tf.tensor2d(trainData, [rows.length, featureSize]);
	const validationX = validation.length ? tf.tensor2d(matrix(validation), [validation.length, featureSize]) : undefined;
	// Inside tidy so the initial-value tensors go; variables survive tidy.
	const variables: Variables = tf.tidy(() =>
		initial.map((l, i) => ({
			kernel: tf.variable(tf.tensor2d(l.kernel, [i === 0 ? featureSize : initial[i - 1].units, l.units])),
			bias: tf.variable(tf.tensor1d(l.bias)),
		})),
	);
	// At most 16 steps an epoch: a large training set gets larger batches (and a learning rate
	// scaled to match) instead of more steps, the cost of a step being mostly fixed overhead.
	const batchSize = Math.max(options.batchSize, Math.ceil(rows.length / 16));
	const optimizer = tf.train.adam(options.learningRate * Math.min(10, batchSize / options.batchSize));
	const lastInputs = initial.length > 1 ? initial[initial.length - 2].units : featureSize;
	const history: EpochRecord[] = [];
	let best = { loss: Infinity, epoch: 0, layers: initial };
	let averaged: DenseLayer[] | undefined;
	let averagedEpochs = 0;
	try {
		for (let epoch = 1; epoch <= epochs; epoch++) {
			const order = shuffleInPlace([...rows.keys()], random);
			for (let start = 0; start < order.length; start += batchSize) {
				const batch = order.slice(start, start + batchSize);
				// Batches are copied out in JS: TF.js's gather costs tens of milliseconds on wasm.
				const batchData = new Float32Array(batch.length * featureSize);
				batch.forEach((b, i) => batchData.set(trainData.subarray(b * featureSize, (b + 1) * featureSize), i * featureSize));
				// A linear head drops inputs: applied to the copy, it costs no tensor and no op.
				if (options.dropout > 0 && initial.length === 1) dropout(batchData, options.dropout, random);
				const mask = options.dropout > 0 && initial.length > 1 ? dropout(new Float32Array(batch.length * lastInputs).fill(1), options.dropout, random) : undefined;
				tf.tidy(() => {
					const x = tf.tensor2d(batchData, [batch.length, featureSize]);
					const y = tf.oneHot(tf.tensor1d(batch.map((b) => target[rows[b]]), 'int32'), classCount);
					const w = tf.tensor1d(batch.map((b) => classWeight[target[rows[b]]]));
					const hiddenMask = mask ? tf.tensor2d(mask, [batch.length, lastInputs]) : undefined;
					optimizer.applyGradients(gradients(variables, x, y, w, hiddenMask));
				});
			}
			const trainScore = score(variables, trainX, rows.map((r) => target[r]), classWeight, classCount);
			const record: EpochRecord = { epoch, loss: trainScore.loss, accuracy: trainScore.accuracy };
			if (validationX) {
				const v = score(variables, validationX, validation.map((r) => target[r]), classWeight, classCount);
				record.validationLoss = v.loss;
				record.validationAccuracy = v.accuracy;
				if (v.loss < best.loss - 1e-4) best = { loss: v.loss, epoch, layers: readLayers(variables, initial) };
				else if (epoch - best.epoch >= options.patience) break;
			}
			history.push(record);
			// Without a validation set (the final fit) the head is the average of the weights over the
			// second half of training: one run's last steps are noisy, their average is not.
			if (!validationX && epoch > epochs / 2) {
				const current = readLayers(variables, initial);
				averaged ??= current.map((l) => ({ ...l, kernel: new Float32Array(l.kernel.length), bias: new Float32Array(l.bias.length) }));
				averagedEpochs++;
				averaged.forEach((l, i) => {
					for (let j = 0; j < l.kernel.length; j++) l.kernel[j] += current[i].kernel[j];
					for (let j = 0; j < l.bias.length; j++) l.bias[j] += current[i].bias[j];
				});
			}
		}
		if (!validationX) {
			averaged!.forEach((l) => {
				l.kernel.forEach((v, j) => (l.kernel[j] = v / averagedEpochs));
				l.bias.forEach((v, j) => (l.bias[j] = v / averagedEpochs));
			});
			best = { loss: history[history.length - 1].loss, epoch: epochs, layers: averaged! };
		}
	} finally {
		trainX.dispose();
		validationX?.dispose();
		variables.forEach((v) => (v.kernel.dispose(), v.bias.dispose()));
		optimizer.dispose();
	}
	return { mean, std, layers: best.layers, bestEpoch: best.epoch, history };
}

function initialLayers(featureSize: number, sizes: number[], random: () => number): DenseLayer[] {
	let inputs = featureSize;
	return sizes.map((units, i) => {
		const layer = glorotDense(inputs, units, i === sizes.length - 1 ? 'softmax' : 'relu', random);
		inputs = units;
		return layer;
	});
}
/** Class probabilities for each feature vector. */
export function predictHead(head: Head, features: Float32Array[]): Float32Array[] {
	if (features.length === 0) return [];
	for (const f of features) {
		if (f.length !== head.featureSize) {
			throw new TransferLearningError(
				`The features have ${f.length} values but the model expects ${head.featureSize}`,
				'Extract the features with the backbone the model was trained on',
			);
		}
	}
	const flat = tf.tidy(() => {
		let x: tf.Tensor2D = tf.tensor2d(concat(features.map((f) => standardise(f, head.mean, head.std)), head.featureSize), [features.length, head.featureSize]);
		let inputs = head.featureSize;
		for (const layer of head.layers) {
			x = tf.add(tf.matMul(x, tf.tensor2d(layer.kernel, [inputs, layer.units])), tf.tensor1d(layer.bias));
			x = layer.activation === 'relu' ? tf.relu(x) : tf.softmax(x);
			inputs = layer.units;
		}
		return x.dataSync();
	});
	const k = head.labels.length;
	return features.map((_, i) => Float32Array.from(flat.subarray(i * k, (i + 1) * k)));
}

export function argMax(values: ArrayLike<number>): number {
	let best = 0;
	for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
	return best;
}

function checkExamples(features: Float32Array[], labels: string[]): string[] {
	if (features.length !== labels.length) throw new Error('features and labels differ in length');
	if (features.length === 0) throw new TransferLearningError('There are no training examples', 'Send labelled items into the node');
	const size = features[0].length;
	features.forEach((f, i) => {
		if (f.length !== size) {
			throw new TransferLearningError(`Example ${i} has ${f.length} features, the first one has ${size}`, 'Extract every example with the same backbone');
		}
		if (!f.every(Number.isFinite)) throw new TransferLearningError(`Example ${i} has features that are not finite numbers`);
	});
	const classes = [...new Set(labels)].sort();
	if (classes.length < 2) {
		throw new TransferLearningError(
			`Training needs at least 2 classes, but every example is labelled "${classes[0]}"`,
			'Add examples of at least one other class',
		);
	}
	const thin = classes.filter((c) => labels.filter((l) => l === c).length < MIN_EXAMPLES_PER_CLASS);
	if (thin.length) {
		throw new TransferLearningError(
			`Each class needs at least ${MIN_EXAMPLES_PER_CLASS} examples; too few for: ${thin.map((c) => `"${c}"`).join(', ')}`,
			'Add more examples of those classes (10 or more each works well)',
		);
	}
	return classes;
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

function standardise(f: Float32Array, mean: Float32Array, std: Float32Array): Float32Array {
	const out = new Float32Array(f.length);
	for (let j = 0; j < f.length; j++) out[j] = (f[j] - mean[j]) / std[j];
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

type Variables = { kernel: tf.Variable; bias: tf.Variable }[];

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

function forward(variables: Variables, x: tf.Tensor2D, dropoutMask?: tf.Tensor2D): tf.Tensor2D {
	let h = x;
	variables.forEach((v, i) => {
		const last = i === variables.length - 1;
		if (last && dropoutMask) h = tf.mul(h, dropoutMask);
		h = tf.add(tf.matMul(h, v.kernel), v.bias);
		if (!last) h = tf.relu(h);
	});
	return h; // logits
}

/**
 * Back-propagation of the weighted cross-entropy through the (one or two) dense layers, written
 * out: TF.js's general autograd cost more per step than the arithmetic of a head this small.
 */
function gradients(variables: Variables, x: tf.Tensor2D, oneHot: tf.Tensor, weights: tf.Tensor1D, hiddenMask?: tf.Tensor2D): { name: string; tensor: tf.Tensor }[] {
	const last = variables[variables.length - 1];
	let input: tf.Tensor2D = x;
	let preActivation: tf.Tensor2D | undefined;
	if (variables.length > 1) {
		preActivation = tf.add(tf.matMul(x, variables[0].kernel), variables[0].bias) as tf.Tensor2D;
		input = tf.relu(preActivation);
		if (hiddenMask) input = tf.mul(input, hiddenMask);
	}
	const probabilities = tf.softmax(tf.add(tf.matMul(input, last.kernel), last.bias));
	// d(loss)/d(logits) = (p - y) * w / sum(w)
	const dLogits = tf.mul(tf.sub(probabilities, oneHot), tf.expandDims(tf.div(weights, tf.sum(weights)), 1)) as tf.Tensor2D;
	const grads: { name: string; tensor: tf.Tensor }[] = [
		{ name: last.kernel.name, tensor: tf.matMul(input, dLogits, true, false) },
		{ name: last.bias.name, tensor: tf.sum(dLogits, 0) },
	];
	if (preActivation) {
		let dHidden: tf.Tensor2D = tf.matMul(dLogits, last.kernel, false, true);
		if (hiddenMask) dHidden = tf.mul(dHidden, hiddenMask);
		const dPre = tf.mul(dHidden, tf.step(preActivation)) as tf.Tensor2D;
		grads.push({ name: variables[0].kernel.name, tensor: tf.matMul(x, dPre, true, false) }, { name: variables[0].bias.name, tensor: tf.sum(dPre, 0) });
	}
	return grads;
}

function weightedCrossEntropy(logits: tf.Tensor2D, oneHot: tf.Tensor, weights: tf.Tensor1D): tf.Scalar {
	const perExample = tf.neg(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1));
	return tf.div(tf.sum(tf.mul(perExample, weights)), tf.sum(weights)) as tf.Scalar;
}

function score(variables: Variables, x: tf.Tensor2D, target: number[], classWeight: number[], classCount: number) {
	return tf.tidy(() => {
		const logits = forward(variables, x);
		const y = tf.oneHot(tf.tensor1d(target, 'int32'), classCount);
		const loss = weightedCrossEntropy(logits, y, tf.tensor1d(target.map((t) => classWeight[t]))).dataSync()[0];
		const predicted = tf.argMax(logits, 1).dataSync();
		const correct = target.reduce((n, t, i) => n + (predicted[i] === t ? 1 : 0), 0);
		return { loss, accuracy: correct / target.length };
	});
}

function readLayers(variables: Variables, layers: DenseLayer[]): DenseLayer[] {
	return variables.map((v, i) => ({
		units: layers[i].units,
		activation: layers[i].activation,
		// dataSync may hand out the backend's own buffer; the best weights must not change under us.
		kernel: Float32Array.from(v.kernel.dataSync()),
		bias: Float32Array.from(v.bias.dataSync()),
	}));
}

function concat(rows: Float32Array[], width: number): Float32Array {
	const out = new Float32Array(rows.length * width);
	rows.forEach((r, i) => out.set(r, i * width));
	return out;
}
