import { credentialKey, type HostAuth } from '../net/download';
import { TransferLearningError } from '../errors';
import { LruCache } from '../lru';
import { sharePromise } from '../memo';
import { RefCounted } from '../ref-counted';
import { settings, type BackendChoice } from '../settings';
import { backboneKey, type TextBackboneSpec } from '../backbones/catalog';
import type { HubTextSpec } from './hf-catalog';
import { HubTextEncoder } from './hf-encoder';
import { UseLitePool } from './use-lite-pool';

/** A sentence encoder: one vector per text, every vector `dimension` long. */
export interface TextEncoder {
	readonly spec: TextBackboneSpec;
	readonly dimension: number;
	readonly backendName: string;
	embed(texts: string[]): Promise<Float32Array[]>;
	dispose(): void;
}

export interface TextLoadOptions {
	auth?: HostAuth;
	backend?: BackendChoice;
}

/** Reads a spec's weights and returns a ready encoder; one per `TextBackboneSpec['format']`. */
const LOADERS: Record<TextBackboneSpec['format'], (spec: TextBackboneSpec, options: TextLoadOptions) => Promise<TextEncoder>> = {
	// Seconds of synchronous wasm per batch: off the event loop n8n answers HTTP requests on.
	'use-lite': (spec, options) => UseLitePool.load(spec, { backend: options.backend }),
	'hf-onnx': (spec, options) => HubTextEncoder.load(spec as HubTextSpec, options),
};

/** An encoder shared through the cache (see RefCounted). */
export class SharedTextEncoder extends RefCounted implements TextEncoder {
	protected readonly kind = 'Text encoder';

	constructor(private readonly inner: TextEncoder) {
		super();
	}

	get spec() {
		return this.inner.spec;
	}
	get dimension() {
		return this.inner.dimension;
	}
	get backendName() {
		return this.inner.backendName;
	}

	embed(texts: string[]): Promise<Float32Array[]> {
		this.assertLive();
		return this.inner.embed(texts);
	}

	protected release(): void {
		this.inner.dispose();
	}
}

// Encoders are tens of MB each; two cover an instance that mixes them.
const loaded = new LruCache<string, Promise<SharedTextEncoder>>(2, (pending) => {
	pending.then((encoder) => encoder.retire()).catch(() => {});
});

/** Loads a text encoder once per process and backend; later calls get the same instance. */
export function loadTextEncoder(spec: TextBackboneSpec, options: TextLoadOptions = {}): Promise<SharedTextEncoder> {
	const load = Object.hasOwn(LOADERS, spec.format) ? LOADERS[spec.format] : undefined;
	if (!load) return Promise.reject(new TransferLearningError(`Unknown text encoder format "${String(spec.format)}"`, 'Update the n8n-nodes-transfer-learning package'));
	// Per credential, as for image backbones: a private hub model is not served to a caller without it.
	const key = `${backboneKey(spec)}@${options.backend ?? settings().backend}#${credentialKey(options.auth)}`;
	return sharePromise(loaded, key, async () => new SharedTextEncoder(await load(spec, options)));
}

/** Why `value` cannot be embedded, or undefined when it can. */
export function textProblem(value: unknown): TransferLearningError | undefined {
	if (typeof value !== 'string') {
		const what = value === null ? 'null' : Array.isArray(value) ? 'a list' : value === undefined ? 'missing' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
		return new TransferLearningError(`The text is ${what}, not a string`, 'Set "Text" to an expression that gives the item\'s text, e.g. {{ $json.text }}, or turn the value into text with {{ String(...) }}');
	}
	if (!value.trim()) return new TransferLearningError('The text is empty', 'Give the item some text, or filter out empty items before this node');
	return undefined;
}

/**
 * A vector for each text, or the error that text caused, in input order; `batchSize` texts run
 * through the encoder together.
 */
export async function embedTexts(encoder: SharedTextEncoder, texts: unknown[], options: { batchSize?: number; signal?: AbortSignal } = {}): Promise<(Float32Array | Error)[]> {
	const batchSize = Math.max(1, options.batchSize ?? 32);
	const results: (Float32Array | Error)[] = texts.map((text) => textProblem(text) ?? new Float32Array(0));
	const good = texts.flatMap((_, i) => (results[i] instanceof Error ? [] : [i]));
	const release = encoder.hold();
	try {
		for (let start = 0; start < good.length; start += batchSize) {
			options.signal?.throwIfAborted();
			const batch = good.slice(start, start + batchSize);
			const vectors = await encoder.embed(batch.map((i) => texts[i] as string));
			batch.forEach((i, j) => (results[i] = vectors[j]));
		}
	} finally {
		release();
	}
	return results;
}
