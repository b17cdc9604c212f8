/**
 * The worker thread that trains a head, so that n8n's event loop keeps serving webhooks while it
 * runs. trainHead (../head.ts) starts one per training and ends it when the result is in.
 */
import { constants, setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { checkStop, gatedProducts, type TrainingControl } from './control';
import type { TrainingOptions, TrainingProgress } from './head';
import { openProducts } from './products';
import { train } from './train';

export interface TrainRequest {
	/** Every example's features, one after another: one buffer travels without a copy. */
	features: Float32Array;
	featureSize: number;
	labels: string[];
	classes: string[];
	options: TrainingOptions;
	/** After the examples, this many views of each, example by example. */
	viewsPerExample: number;
	control: TrainingControl;
}

// Training is background work: on two cores it would otherwise take half of the CPU that webhook
// requests need. On Linux a thread has its own nice value, so this lowers this thread only; elsewhere
// it would lower the whole n8n process, so it is left alone there.
if (process.platform === 'linux') {
	try {
		setPriority(constants.priority.PRIORITY_LOW);
	} catch {
		// Only latency is lost where a system refuses it.
	}
}

parentPort!.once('message', async (request: TrainRequest) => {
	try {
		const { features, featureSize, labels, classes, options, viewsPerExample, control } = request;
		const row = (i: number) => features.subarray(i * featureSize, (i + 1) * featureSize);
		const rows = labels.map((_, i) => row(i));
		const views = labels.map((_, i) => Array.from({ length: viewsPerExample }, (_, j) => row(labels.length + i * viewsPerExample + j)));
		const onProgress = (progress: TrainingProgress) => {
			checkStop(control);
			parentPort!.postMessage({ type: 'progress', progress });
		};
		const result = await train(rows, labels, classes, options, onProgress, views, () => gatedProducts(control, openProducts));
		const { head } = result;
		const buffers = [head.mean, head.std, ...head.layers.flatMap((l) => [l.kernel, l.bias])].map((a) => a.buffer as ArrayBuffer);
		parentPort!.postMessage({ type: 'done', result }, [...new Set(buffers)]);
	} catch (error) {
		// The examples were checked before the worker started: what fails here is a bug, sent back with its stack.
		const { message, stack } = error as Error;
		parentPort!.postMessage({ type: 'error', message: message ?? String(error), stack });
	}
});
