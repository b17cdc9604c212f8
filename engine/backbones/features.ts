import { backboneLoadError } from './availability';
import { Backbone } from './backbone';
import { backboneKey, type ImageBackboneSpec } from './catalog';
import { credentialKey, type HostAuth } from '../net/download';
import { decodeImage, type ResizeMode } from '../inputs/image';
import { LruCache } from '../lru';
import type { LocalFileAccess } from '../inputs/paths';
import { sharePromise } from '../memo';
import { settings, type BackendChoice, type PrecisionChoice } from '../settings';

export interface LoadOptions {
	auth?: HostAuth;
	backend?: BackendChoice;
	fileAccess?: LocalFileAccess;
	precision?: PrecisionChoice;
}

// Backbones are tens of MB each; a handful covers every workflow of an instance. One that falls
// out is disposed once the extractions using it are done.
const loaded = new LruCache<string, Promise<Backbone>>(4, (pending) => {
	pending.then((b) => b.retire()).catch(() => {});
});

/**
 * Loads a backbone once per process, backend, precision and credential (a private model is not served to a
 * caller without the credential that fetched it); later calls get the same instance. A catalog backbone
 * that fails says which others are at hand.
 */
export function loadBackbone(spec: ImageBackboneSpec, options: LoadOptions = {}): Promise<Backbone> {
	const key = `${backboneKey(spec)}@${options.backend ?? settings().backend}:${options.precision ?? settings().precision}#${credentialKey(options.auth)}`;
	return sharePromise(loaded, key, () =>
		Backbone.load(spec, options).catch(async (error) => {
			throw await backboneLoadError(spec, error);
		}),
	);
}

export interface ExtractOptions {
	resizeMode?: ResizeMode;
	batchSize?: number;
}

/**
 * Features for each image, or the error that image caused, in input order; one bad image does
 * not cost the others their result.
 */
export async function extractFeatures(backbone: Backbone, images: Buffer[], options: ExtractOptions = {}): Promise<(Float32Array | Error)[]> {
	const batchSize = Math.max(1, options.batchSize ?? 16);
	const { maxImagePixels } = settings();
	const decode = (start: number) =>
		Promise.allSettled(
			images.slice(start, start + batchSize).map((bytes) => decodeImage(bytes, backbone.spec.inputSize, options.resizeMode ?? 'centreCrop', maxImagePixels)),
		);
	const results: (Float32Array | Error)[] = new Array(images.length);
	const release = backbone.hold();
	try {
		let next = images.length ? decode(0) : undefined;
		for (let start = 0; start < images.length; start += batchSize) {
			const decoded = await next!;
			// sharp decodes the next batch on libuv's threads while the network runs on this one.
			next = start + batchSize < images.length ? decode(start + batchSize) : undefined;
			const good: number[] = [];
			decoded.forEach((d, i) => {
				if (d.status === 'fulfilled') good.push(i);
				else results[start + i] = d.reason instanceof Error ? d.reason : new Error(String(d.reason));
			});
			const features = await backbone.extract(good.map((i) => (decoded[i] as PromiseFulfilledResult<Uint8Array>).value));
			good.forEach((i, j) => (results[start + i] = features[j]));
		}
	} finally {
		release();
	}
	return results;
}

export function l2Normalize(features: Float32Array): Float32Array {
	let sum = 0;
	for (const v of features) sum += v * v;
	const norm = Math.sqrt(sum) || 1;
	return features.map((v) => v / norm);
}
