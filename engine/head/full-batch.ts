/**
 * A linear softmax head fitted on all rows at once (L-BFGS) on unit-length inputs, its L2 strength
 * picked on the validation split from a short grid, then refitted on every example.
 */
import type { EpochRecord, Head, SolverReport, TrainingOptions, TrainingProgress } from './head';
import { computeMetrics, type Metrics } from './metrics';
import type { SoftmaxProducts } from './products';
import { lbfgs, parameterCount, type SoftmaxProblem } from './solver';

/** Above this many rows (examples and their views), every head trains in mini-batches. */
export const FULL_BATCH_MAX_ROWS = 10_000;

/**
 * Strongest first: each fit starts from the previous one's weights, which are close. On unit-scale
 * inputs the best strength was between 1e-3 and 1e-1 on every dataset and backbone measured.
 */
export const L2_GRID = [1e-1, 1e-2, 1e-3];
/** Without a validation split there is nothing to choose on: the middle of the grid. */
const DEFAULT_L2 = 1e-2;
/**
 * A candidate only has to rank against the others: a loose fit (at most 40 iterations, to a largest
 * gradient component of 3e-4) picked the same strengths as a tight one on every dataset measured.
 * The saved head's fit goes to 1e-4: tighter (1e-5) took half again as many iterations there and
 * moved test accuracy by under half a point either way (flowers5, cats_vs_dogs; 5 seeds).
 */
const CANDIDATE_FIT = { maxIterations: 40, gradientTolerance: 3e-4 };
export const MAX_ITERATIONS = 100;
const GRADIENT_TOLERANCE = 1e-4;

export interface FullBatchResult {
	head: Head;
	metrics: Metrics;
	history: EpochRecord[];
	bestEpoch: number;
	finalEpochs: number;
	solver: SolverReport;
}

/**
 * `features` and `target` are the sorted examples; `trainRows` and `validation` their split.
 * `views[i]` are more images of example i (augmentation): trained on with its label, always on its
 * side of the split, never scored.
 */
export async function fitFullBatch(
	features: Float32Array[],
	target: number[],
	classes: string[],
	trainRows: number[],
	validation: number[],
	options: TrainingOptions,
	onProgress: (progress: TrainingProgress) => void,
	views: Float32Array[][],
	products: SoftmaxProducts,
): Promise<FullBatchResult> {
	const k = classes.length;
	const candidates: Extract<SolverReport, { method: 'lbfgs' }>['candidates'] = [];
	const history: EpochRecord[] = [];
	// Inputs scaled to unit length: raw inputs (standardised only) were also tried as candidates, and
	// on flowers5 (MobileNet v1 0.25 and 0.75, v2 0.35) and cats_vs_dogs, 5 seeds each, their validation
	// loss was within 3% of unit length's at every strength, and test accuracy without them the same
	// or higher: they doubled the search for nothing. Vectors of unit length already are left alone.
	const l2Normalize = !features.every((f) => Math.abs(Math.sqrt(squaredLength(f)) - 1) < 1e-3);
	let chosen = { l2: DEFAULT_L2, weights: undefined as Float64Array | undefined, metrics: undefined as Metrics | undefined };
	if (validation.length) {
		const fitRows = inputsOf(features, target, trainRows, views, l2Normalize);
		const scaling = scalingOf(fitRows);
		const problem = problemOf(fitRows, scaling, k, options);
		const validationProblem = problemOf(inputsOf(features, target, validation, [], l2Normalize), scaling, k, options);
		const weights = new Float64Array(parameterCount(problem));
		let best = Infinity;
		for (const l2 of L2_GRID) {
			const { iterations } = await lbfgs((w, g) => products.loss(problem, l2, w, g), weights, CANDIDATE_FIT);
			const fit = scoreRows(problem, await products.logits(problem, weights));
			const held = scoreRows(validationProblem, await products.logits(validationProblem, weights));
			const record: EpochRecord = { epoch: history.length + 1, loss: fit.loss, accuracy: fit.accuracy, validationLoss: held.loss, validationAccuracy: held.accuracy, l2, l2Normalize };
			history.push(record);
			candidates.push({ l2, l2Normalize, iterations, validationLoss: held.loss, validationAccuracy: held.accuracy });
			onProgress({ phase: 'search', epochs: L2_GRID.length, ...record });
			if (held.loss < best) {
				best = held.loss;
				chosen = { l2, weights: Float64Array.from(weights), metrics: computeMetrics(classes, validation.map((r) => target[r]), held.predicted) };
			}
		}
	}
	const everyRow = target.map((_, i) => i);
	const allRows = inputsOf(features, target, everyRow, views, l2Normalize);
	const scaling = scalingOf(allRows);
	const problem = problemOf(allRows, scaling, k, options);
	// The chosen fit's weights are a close start: the scaling differs only by the held-out rows.
	const weights = chosen.weights ?? new Float64Array(parameterCount(problem));
	const { iterations } = await lbfgs((w, g) => products.loss(problem, chosen.l2, w, g), weights, {
		maxIterations: MAX_ITERATIONS,
		gradientTolerance: GRADIENT_TOLERANCE,
		onIteration: (epoch, loss) => onProgress({ phase: 'final', epochs: MAX_ITERATIONS, epoch, loss, accuracy: NaN }),
	});
	const head = headOf(classes, weights, scaling, l2Normalize);
	let metrics = chosen.metrics;
	if (!metrics) {
		// No validation split: the figures are the training examples'.
		const examples = problemOf(inputsOf(features, target, everyRow, [], l2Normalize), scaling, k, options);
		const scored = scoreRows(examples, await products.logits(examples, weights));
		metrics = computeMetrics(classes, target, scored.predicted);
		history.push({ epoch: 1, loss: scored.loss, accuracy: scored.accuracy, l2: chosen.l2, l2Normalize });
	}
	return {
		head,
		metrics,
		history,
		bestEpoch: validation.length ? candidates.findIndex((c) => c.l2 === chosen.l2) + 1 : 1,
		finalEpochs: iterations,
		solver: { method: 'lbfgs', l2: chosen.l2, l2Normalize, chosenBy: validation.length ? 'validation' : 'default', candidates, runtime: products.runtime },
	};
}

/** Rows by reference: each is `vectors[i]` times `factor[i]` (1 / its length for unit-length inputs), of squared length `squares[i]`. */
interface Rows {
	vectors: Float32Array[];
	factor: Float64Array;
	squares: Float64Array;
	target: number[];
}

/** The listed examples, then their extra views; unit-length when asked, without copying a vector. */
function inputsOf(features: Float32Array[], target: number[], rows: number[], views: Float32Array[][], l2Normalize: boolean): Rows {
	const vectors: Float32Array[] = [];
	const labels: number[] = [];
	for (const r of rows) {
		for (const v of [features[r], ...(views[r] ?? [])]) {
			vectors.push(v);
			labels.push(target[r]);
		}
	}
	const squares = Float64Array.from(vectors, squaredLength);
	const factor = squares.map((s) => (l2Normalize && s > 0 ? 1 / Math.sqrt(s) : 1));
	return { vectors, factor, squares: l2Normalize ? squares.map((s) => (s > 0 ? 1 : 0)) : squares, target: labels };
}

// Indexed loops: an iterator or a map callback per element took a fifth of a 1000 x 1280 training.
function squaredLength(v: Float32Array): number {
	let sum = 0;
	for (let j = 0; j < v.length; j++) sum += v[j] * v[j];
	return sum;
}

/**
 * Centred on the mean, then divided by one scale for all features: the root of the total variance,
 * so that the rows are about unit length whatever the backbone and the grid's strengths mean the
 * same everywhere. Scaling each feature to unit variance instead blew up the noise of features
 * that barely vary and cost 3-6 points on flowers5. One pass: the total variance is the mean squared
 * length less the mean's (in float64, the difference of numbers near 1 loses nothing that matters).
 */
function scalingOf(rows: Rows): { mean: Float32Array; scale: number } {
	const d = rows.vectors[0].length;
	const n = rows.vectors.length;
	const mean = new Float64Array(d);
	let squares = 0;
	for (let i = 0; i < n; i++) {
		const v = rows.vectors[i];
		const f = rows.factor[i] / n;
		for (let j = 0; j < d; j++) mean[j] += v[j] * f;
		squares += rows.squares[i] / n;
	}
	const scale = Math.sqrt(Math.max(0, squares - mean.reduce((sum, m) => sum + m * m, 0)));
	// The rows are about unit length: a spread this small is rounding, all rows alike.
	return { mean: Float32Array.from(mean), scale: scale > 1e-6 ? scale : 1 };
}

function problemOf(rows: Rows, scaling: { mean: Float32Array; scale: number }, classes: number, options: TrainingOptions): SoftmaxProblem {
	const { mean } = scaling;
	const d = mean.length;
	const n = rows.vectors.length;
	const x = new Float64Array(n * d);
	for (let i = 0; i < n; i++) {
		const v = rows.vectors[i];
		const f = rows.factor[i];
		const at = i * d;
		for (let j = 0; j < d; j++) x[at + j] = (v[j] * f - mean[j]) / scaling.scale;
	}
	// Balanced: each class weighs the same in total, however many rows it has.
	const counts = new Array<number>(classes).fill(0);
	for (const t of rows.target) counts[t]++;
	const weight = Float64Array.from(rows.target, (t) => (options.classWeights === 'balanced' ? 1 / (classes * counts[t]) : 1 / n));
	return { x, inputs: d, classes, target: Int32Array.from(rows.target), weight };
}

/** Weighted cross-entropy (no penalty), accuracy and predicted classes of the rows, from their logits. */
function scoreRows(problem: SoftmaxProblem, logits: Float64Array) {
	const { classes: k, target, weight } = problem;
	const predicted: number[] = [];
	let loss = 0;
	let total = 0;
	let correct = 0;
	for (let r = 0; r < target.length; r++) {
		const at = r * k;
		let best = 0;
		for (let c = 1; c < k; c++) if (logits[at + c] > logits[at + best]) best = c;
		let sum = 0;
		for (let c = 0; c < k; c++) sum += Math.exp(logits[at + c] - logits[at + best]);
		loss += weight[r] * (logits[at + best] + Math.log(sum) - logits[at + target[r]]);
		total += weight[r];
		predicted.push(best);
		if (best === target[r]) correct++;
	}
	return { loss: loss / total, accuracy: correct / target.length, predicted };
}

/** The head format's standardisation holds the scaling: the mean, and the one scale for every feature. */
function headOf(classes: string[], weights: Float64Array, scaling: { mean: Float32Array; scale: number }, l2Normalize: boolean): Head {
	const d = scaling.mean.length;
	const k = classes.length;
	const kernel = Float32Array.from(weights.subarray(0, d * k));
	return {
		labels: classes,
		featureSize: d,
		mean: scaling.mean,
		std: new Float32Array(d).fill(scaling.scale),
		layers: [{ units: k, activation: 'softmax', kernel, bias: Float32Array.from(weights.subarray(k * d)) }],
		...(l2Normalize ? { l2Normalize } : {}),
	};
}
