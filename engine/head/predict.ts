/**
 * A head's forward pass in plain JS, shared by Classify and the training worker; it imports nothing
 * heavy, so that the worker, which starts per training, loads quickly.
 */
import { TransferLearningError } from '../errors';
import type { Head } from './head';

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
	// A head is one or two small dense layers: a loop over the weights costs less than TF.js's
	// dispatch and needs no initialised backend (the backbone may run on ONNX Runtime).
	return features.map((f) => {
		const norm = head.l2Normalize ? Math.sqrt(f.reduce((sum, v) => sum + v * v, 0)) || 1 : 1;
		let x: Float64Array = Float64Array.from(f, (v, j) => (v / norm - head.mean[j]) / head.std[j]);
		for (const layer of head.layers) {
			const out = Float64Array.from(layer.bias);
			for (let i = 0; i < x.length; i++) {
				const xi = x[i];
				if (xi === 0) continue;
				for (let u = 0, k = i * layer.units; u < layer.units; u++) out[u] += xi * layer.kernel[k + u];
			}
			if (layer.activation === 'relu') for (let u = 0; u < out.length; u++) out[u] = Math.max(0, out[u]);
			else softmax(out);
			x = out;
		}
		return Float32Array.from(x);
	});
}

function softmax(values: Float64Array): void {
	const max = Math.max(...values);
	let sum = 0;
	for (let i = 0; i < values.length; i++) sum += values[i] = Math.exp(values[i] - max);
	for (let i = 0; i < values.length; i++) values[i] /= sum;
}

export function argMax(values: ArrayLike<number>): number {
	let best = 0;
	for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
	return best;
}
