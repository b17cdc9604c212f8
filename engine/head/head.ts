import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { UNKNOWN_LABEL } from './classifier';
import { TransferLearningError } from '../errors';
import type { Metrics } from './metrics';
import { labelProblem } from '../store/model';
import type { TrainRequest } from './worker';
import { askToStop, closeGate, trainingControl, type TrainingControl } from './control';

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
	/**
	 * `auto`: a head without a hidden layer is fitted full-batch (L-BFGS on unit-length inputs, L2
	 * strength chosen on the validation split) up to FULL_BATCH_MAX_ROWS rows, where epochs, batch
	 * size, learning rate, dropout and patience do not apply; anything else trains with mini-batch
	 * Adam. `miniBatch` always trains with mini-batch Adam.
	 */
	solver: 'auto' | 'miniBatch';
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
	solver: 'auto',
};

// The training worker loads these without the rest of this module (whose imports reach sharp
// and zod): a worker starts per training, and loading them cost it 80-160 ms.
export { FULL_BATCH_MAX_ROWS } from './full-batch';
export { argMax, predictHead } from './predict';

const MIN_EXAMPLES_PER_CLASS = 2;

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
	/** Whether each vector is scaled to length 1 before the standardisation (the full-batch solver may choose it). */
	l2Normalize?: boolean;
}

export interface EpochRecord {
	epoch: number;
	/** Over the epoch's batches as they were trained (with dropout), as Keras reports them. */
	loss: number;
	accuracy: number;
	validationLoss?: number;
	validationAccuracy?: number;
	/** Full-batch solver: a record per candidate of the grid, these its L2 strength and input scaling. */
	l2?: number;
	l2Normalize?: boolean;
}

/** How the head was fitted, and for the full-batch solver what it chose and from what. */
export type SolverReport =
	| { method: 'miniBatchAdam' }
	| {
			method: 'lbfgs';
			l2: number;
			l2Normalize: boolean;
			chosenBy: 'validation' | 'default';
			/** Each was fitted on the training split and scored on the validation split; the lowest validation loss wins. */
			candidates: { l2: number; l2Normalize: boolean; iterations: number; validationLoss: number; validationAccuracy: number }[];
			/** What multiplied the matrices: ONNX Runtime, or plain JS where it does not load or TL_BACKEND names another backend. */
			runtime: 'onnxruntime' | 'js';
	  };

/**
 * One epoch of training: `search` picks the epoch count on the validation split, `final` trains the
 * saved head on every example. For the full-batch solver a `search` record is one candidate of the
 * grid (`epoch` counts them) and a `final` one an L-BFGS iteration (its accuracy is NaN: not measured).
 */
export interface TrainingProgress extends EpochRecord {
	phase: 'search' | 'final';
	/** This phase's upper bound (early stopping may end `search` sooner). */
	epochs: number;
}

export interface TrainingResult {
	/** The saved head: with a validation split, retrained on every example (`finalTrainCount`) for `finalEpochs`. */
	head: Head;
	/**
	 * Measured on the `validationCount` held-out examples with the head of the validation-split fit
	 * (trained on `trainCount`), not on the saved head; without a split, on the training examples.
	 */
	metrics: Metrics;
	evaluatedOn: 'validation' | 'training';
	/**
	 * Every epoch of the validation-split fit, the one that triggered early stopping included; for
	 * the full-batch solver, every candidate of the grid, and `bestEpoch` the chosen one's number.
	 */
	history: EpochRecord[];
	bestEpoch: number;
	examplesPerClass: Record<string, number>;
	/** Examples the validation-split fit trained on. */
	trainCount: number;
	validationCount: number;
	/** Examples the saved head was trained on: all of them. */
	finalTrainCount: number;
	/** Epochs, or L-BFGS iterations for the full-batch solver, of the saved head's training. */
	finalEpochs: number;
	options: TrainingOptions;
	solver: SolverReport;
	/** Extra views per example the head also learned from (augmentation); 0 without. */
	viewsPerExample: number;
}

function validateTrainingOptions(options: TrainingOptions): void {
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
	check(options.solver === 'auto' || options.solver === 'miniBatch', `"solver" must be auto or miniBatch`);
}

/**
 * Trains a softmax head on feature vectors in a worker thread: the training holds a CPU core for
 * seconds, and on n8n's event loop it would hold up every webhook meanwhile. `onProgress` hears of
 * each epoch. `views[i]`, when given, are more feature vectors of example i (the same image
 * flipped or cropped): the head learns them with its label, and they stay on its side of the
 * validation split. `signal` stops the training (n8n's Stop execution): it rejects with the
 * signal's reason once the worker has stopped.
 */
export async function trainHead(
	features: Float32Array[],
	labels: string[],
	partial: Partial<TrainingOptions> = {},
	onProgress?: (progress: TrainingProgress) => void,
	views?: Float32Array[][],
	signal?: AbortSignal,
): Promise<TrainingResult> {
	const options: TrainingOptions = { ...DEFAULT_TRAINING, ...partial };
	validateTrainingOptions(options);
	const classes = checkExamples(features, labels);
	const featureSize = features[0].length;
	if (views && views.length !== features.length) throw new Error('views and features differ in length');
	const viewsPerExample = views?.[0]?.length ?? 0;
	views?.forEach((list, i) => {
		if (list.length !== viewsPerExample) throw new Error(`example ${i} has ${list.length} views, the first has ${viewsPerExample}`);
		for (const v of list) {
			if (v.length !== featureSize || !v.every(Number.isFinite)) throw new TransferLearningError(`A view of example ${i} has ${v.length} features that are not all finite numbers, the examples have ${featureSize}`);
		}
	});
	const flat = new Float32Array(features.length * (1 + viewsPerExample) * featureSize);
	features.forEach((f, i) => flat.set(f, i * featureSize));
	views?.forEach((list, i) => list.forEach((v, j) => flat.set(v, (features.length + i * viewsPerExample + j) * featureSize)));
	const control = trainingControl();
	const request: TrainRequest = { features: flat, featureSize, labels, classes, options, viewsPerExample, control };
	const releaseSlot = await trainingSlot();
	if (signal?.aborted) {
		releaseSlot();
		throw signal.reason;
	}
	// Compiled beside this file in dist/, wherever n8n's installer put the package.
	const worker = new Worker(path.join(__dirname, 'worker.js'));
	runningControls.add(control);
	// A training that must stop is asked to (see ./control), and its worker ended once it answered.
	let stoppedBy: { reason: unknown } | undefined;
	const stopWith = (reason: unknown) => {
		stoppedBy ??= { reason };
		askToStop(control);
	};
	const onAbort = () => stopWith(signal!.reason);
	signal?.addEventListener('abort', onAbort, { once: true });
	try {
		return await new Promise<TrainingResult>((resolve, reject) => {
			worker.on('message', (message: WorkerMessage) => {
				if (message.type === 'progress') {
					// Thrown from a worker's message listener, it would crash the process.
					try {
						if (!stoppedBy) onProgress?.(message.progress);
					} catch (error) {
						stopWith(error);
					}
				} else if (stoppedBy) reject(stoppedBy.reason);
				else if (message.type === 'done') resolve(message.result);
				else reject(Object.assign(new Error(`Head training failed: ${message.message}`), { stack: message.stack }));
			});
			worker.on('error', reject);
			worker.on('exit', (code) => reject(new Error(`The head training worker stopped (exit code ${code}) before it finished`)));
			worker.postMessage(request, [flat.buffer]);
		});
	} finally {
		signal?.removeEventListener('abort', onAbort);
		await worker.terminate();
		runningControls.delete(control);
		releaseSlot();
	}
}

const runningControls = new Set<TrainingControl>();

// When n8n exits (after its shutdown timeout) with trainings running, their worker threads end
// with it: each is first kept out of ONNX Runtime, or the process aborts instead of exiting.
process.on('exit', () => {
	for (const control of runningControls) {
		askToStop(control);
		closeGate(control, 2000);
	}
});

// Each training holds a core; one core is left for n8n's event loop. More trainings wait their
// turn, as many as n8n runs at once.
const TRAINING_SLOTS = Math.max(1, os.availableParallelism() - 1);
let trainingsRunning = 0;
const waitingTrainings: (() => void)[] = [];

/** Waits for a free training slot; the returned function frees it. */
async function trainingSlot(): Promise<() => void> {
	// A freed slot passes straight to the next in line, so the count stays as it is.
	if (trainingsRunning < TRAINING_SLOTS) trainingsRunning++;
	else await new Promise<void>((resolve) => waitingTrainings.push(resolve));
	return () => {
		const next = waitingTrainings.shift();
		if (next) next();
		else trainingsRunning--;
	};
}

type WorkerMessage =
	| { type: 'progress'; progress: TrainingProgress }
	| { type: 'done'; result: TrainingResult }
	| { type: 'error'; message: string; stack?: string };

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
	labels.forEach((label, i) => {
		const problem = typeof label === 'string' ? labelProblem(label) : 'it is not text';
		if (problem) {
			throw new TransferLearningError(
				`Example ${i} has the label "${String(label).slice(0, 50)}", which cannot be used: ${problem}`,
				`Rename that class. A label must not be empty, must not hold a comma (Classify's Class Names are separated by commas, so it could never be routed) and must not be "${UNKNOWN_LABEL}" (Classify's label for predictions under the confidence threshold)`,
			);
		}
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
