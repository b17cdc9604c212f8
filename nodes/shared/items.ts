import type { IDataObject, IExecuteFunctions, INodeExecutionData, IPairedItemData } from 'n8n-workflow';
import { NodeOperationError } from 'n8n-workflow';
import { setImmediate } from 'node:timers/promises';
import {
	Backbone,
	catalogBackbone,
	customBackbone,
	downloadImage,
	embedTexts,
	errorMessage,
	extractFeatures,
	extractViewFeatures,
	hubRepoProblem,
	l2Normalize,
	parseFeatureSource,
	redactPaths,
	loadBackbone,
	loadTextEncoder,
	TransferLearningError,
	type BackendChoice,
	type PrecisionChoice,
	type BackboneSpec,
	type FeatureSource,
	type HostAuth,
	type InputType,
	type LocalFileAccess,
	type NormalizationName,
	type ResizeMode,
	type SharedTextEncoder,
} from '../../engine';

/** Items read between two yields to the event loop: tens of milliseconds of expressions. */
const ITEMS_PER_TURN = 50;

/**
 * `read` for each item index, yielding to the event loop every ITEMS_PER_TURN items: n8n evaluates
 * each parameter expression in an isolate (0.5 ms or more on a busy machine), and 1,360 items read
 * in one go held n8n's HTTP server for 2-6 s, long enough for its 5 s keep-alive timer to reset a
 * client's connection.
 */
export async function readEachItem<T>(itemIndices: number[], read: (i: number) => T): Promise<T[]> {
	const values: T[] = [];
	for (const [k, i] of itemIndices.entries()) {
		if (k && k % ITEMS_PER_TURN === 0) await setImmediate();
		values.push(read(i));
	}
	return values;
}

/** The backbone the node's parameters name for `inputType`: Text Backbone for text, Backbone otherwise. */
export function readBackboneSpec(ctx: IExecuteFunctions, inputType: InputType = 'image'): BackboneSpec {
	if (inputType === 'text') {
		const id = ctx.getNodeParameter('textBackbone', 0) as string;
		return id === 'huggingFace' ? hubBackbone(ctx.getNodeParameter('huggingFaceModel', 0, '')) : catalogBackbone(id, 'text');
	}
	const id = ctx.getNodeParameter('backbone', 0) as string;
	if (id !== 'custom') return catalogBackbone(id);
	const layerOrNode = (ctx.getNodeParameter('customFeatureLayer', 0, '') as string).trim();
	return customBackbone({
		url: ctx.getNodeParameter('customModelUrl', 0) as string,
		inputSize: ctx.getNodeParameter('customInputSize', 0, 224) as number,
		normalization: ctx.getNodeParameter('customNormalization', 0, 'minusOneToOne') as NormalizationName,
		// The loader uses whichever applies to the model's format.
		featureLayer: layerOrNode,
		outputNode: layerOrNode,
	});
}

/** The Hugging Face Model ID field, `owner/name` or `owner/name:quantized`, as a text backbone. */
function hubBackbone(value: unknown): BackboneSpec {
	const id = typeof value === 'string' ? value.trim() : '';
	const repo = id.replace(/:quantized$/, '');
	const problem = hubRepoProblem(repo);
	if (problem) {
		const shown = typeof value === 'string' ? `"${value.slice(0, 200)}"` : String(value);
		throw new TransferLearningError(
			`Hugging Face Model ID ${id ? shown : '(empty)'} is not a model id`,
			`Set "Hugging Face Model ID" to owner/name, optionally ending in :quantized: ${problem}`,
		);
	}
	return catalogBackbone(`hf:${id}`, 'text');
}

/** The Model Host credential is optional: public hosts and mirrors need none. */
export async function readHostAuth(ctx: IExecuteFunctions): Promise<HostAuth | undefined> {
	if (!ctx.getNode().credentials?.modelHostApi) return undefined;
	const credentials = await ctx.getCredentials<{ headerName: string; headerValue: string }>('modelHostApi');
	return credentials.headerName ? { headerName: credentials.headerName, headerValue: credentials.headerValue } : undefined;
}

async function readImage(ctx: IExecuteFunctions, itemIndex: number): Promise<Buffer> {
	const source = ctx.getNodeParameter('imageSource', itemIndex, 'binary') as string;
	if (source === 'url') {
		const url = ctx.getNodeParameter('imageUrl', itemIndex) as string;
		if (typeof url !== 'string' || !url.trim()) {
			throw new TransferLearningError('The image URL is empty', 'Set "Image URL" to an expression that gives the address, e.g. {{ $json.imageUrl }}');
		}
		return downloadImage(url.trim());
	}
	const property = ctx.getNodeParameter('binaryPropertyName', itemIndex) as string;
	const binary = ctx.getInputData()[itemIndex].binary ?? {};
	if (!binary[property]) {
		const present = Object.keys(binary);
		throw new TransferLearningError(
			`The item has no binary property "${property}"`,
			present.length
				? `Its binary properties are: ${present.join(', ')}. Set "Binary Property" to the one holding the image.`
				: 'Attach an image to the item (e.g. with Read Files from Disk or an HTTP Request set to return a file)',
		);
	}
	return ctx.helpers.getBinaryDataBuffer(itemIndex, property);
}

/** A features field written by Extract Features (or any array of numbers). */
function readFeatures(ctx: IExecuteFunctions, itemIndex: number, field: string): Float32Array {
	const value = ctx.getInputData()[itemIndex].json[field];
	if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'number' && Number.isFinite(v))) {
		throw new TransferLearningError(
			`The field "${field}" is not a list of numbers`,
			'Run the items through Extract Features first, or set "Features Field" to the field that holds them',
		);
	}
	return Float32Array.from(value as number[]);
}

/**
 * How the item's features were made, as Extract Features records it; undefined for vectors from
 * elsewhere (a vector store, another tool), which are taken on trust when their length fits.
 */
export function readFeatureSource(ctx: IExecuteFunctions, itemIndex: number): FeatureSource | undefined {
	const value = ctx.getInputData()[itemIndex].json[FEATURE_SOURCE_FIELD];
	return value === undefined ? undefined : parseFeatureSource(value);
}

export const FEATURE_SOURCE_FIELD = 'featureSource';

/** What turns items into features: an image backbone or a text encoder. */
type Extractor = Backbone | SharedTextEncoder;

export function loadExtractor(spec: BackboneSpec, options: { auth?: HostAuth; backend?: BackendChoice; fileAccess?: LocalFileAccess; precision?: PrecisionChoice }): Promise<Extractor> {
	if (spec.inputType === 'text') return loadTextEncoder(spec, options);
	return loadBackbone(spec, options);
}

/** The backend an extractor runs on, as the nodes report it. */
export function extractorBackend(extractor: Extractor): { name: string; fallbackReason?: string } {
	return extractor instanceof Backbone ? extractor.backend : { name: extractor.backendName };
}

interface FeatureRequest {
	inputType: InputType | 'features';
	featuresField: string;
	/** Images only. */
	resizeMode?: ResizeMode;
	batchSize: number;
	l2Normalize: boolean;
}

/**
 * What gatherFeatures reads for features made as `source` says (the node's settings, or the model's
 * manifest): vectors from Extract Features come from the Features Field parameter.
 */
export function featureRequest(
	ctx: IExecuteFunctions,
	inputType: InputType | 'features',
	source: { resizeMode?: ResizeMode; l2Normalize: boolean },
	batchSize = 16,
): FeatureRequest {
	const featuresField = inputType === 'features' ? (ctx.getNodeParameter('featuresField', 0, 'features') as string) : '';
	return { inputType, featuresField, resizeMode: source.resizeMode, batchSize, l2Normalize: source.l2Normalize };
}

/** Batches of images held at once: enough for the backbone to decode one batch while it runs another. */
const BATCHES_PER_CHUNK = 4;

/**
 * Features for each listed item, or the error that item caused. Texts are read from the Text
 * parameter and embedded a batch at a time. Images are read (or downloaded)
 * a chunk at a time, at most a batch of reads at once, the next chunk while the backbone works on
 * this one: memory and connections stay bounded however many items come in. Rejects when the
 * backbone cannot be loaded.
 */
export async function gatherFeatures(
	ctx: IExecuteFunctions,
	itemIndices: number[],
	request: FeatureRequest,
	extractor: () => Promise<Extractor>,
): Promise<(Float32Array | Error)[]> {
	let results: (Float32Array | Error)[];
	if (request.inputType === 'text') {
		// The value as the expression gives it: a number or an object is refused, not stringified.
		const texts = await readEachItem(itemIndices, (i) => {
			try {
				return ctx.getNodeParameter('text', i) as unknown;
			} catch (error) {
				return asError(error);
			}
		});
		const readable = itemIndices.flatMap((_, k) => (texts[k] instanceof Error ? [] : [k]));
		const vectors = readable.length ? await embedTexts((await extractor()) as SharedTextEncoder, readable.map((k) => texts[k]), { batchSize: request.batchSize, signal: ctx.getExecutionCancelSignal?.() }) : [];
		let next = 0;
		results = texts.map((text) => (text instanceof Error ? text : vectors[next++]));
	} else if (request.inputType === 'features') {
		results = itemIndices.map((i) => {
			try {
				return readFeatures(ctx, i, request.featuresField);
			} catch (error) {
				return error as Error;
			}
		});
	} else {
		results = await imageChunks(ctx, itemIndices, request, extractor, (model, images) =>
			extractFeatures(model, images, { resizeMode: request.resizeMode, batchSize: request.batchSize }),
		);
	}
	return request.l2Normalize ? results.map((r) => (r instanceof Error ? r : l2Normalize(r))) : results;
}

/**
 * Features of every view of each listed image item (IMAGE_VIEWS: augmentation and test-time
 * averaging), or the error that item caused; read as gatherFeatures reads images.
 */
export async function gatherImageViews(
	ctx: IExecuteFunctions,
	itemIndices: number[],
	request: Omit<FeatureRequest, 'inputType' | 'featuresField'>,
	extractor: () => Promise<Extractor>,
): Promise<(Float32Array[] | Error)[]> {
	const results = await imageChunks(ctx, itemIndices, request, extractor, (model, images) =>
		extractViewFeatures(model, images, { resizeMode: request.resizeMode, batchSize: request.batchSize }),
	);
	return request.l2Normalize ? results.map((r) => (r instanceof Error ? r : r.map(l2Normalize))) : results;
}

/** Reads image items a chunk at a time, the next chunk while `extract` works on this one. */
async function imageChunks<T>(
	ctx: IExecuteFunctions,
	itemIndices: number[],
	request: { batchSize: number },
	extractor: () => Promise<Extractor>,
	extract: (model: Backbone, images: Buffer[]) => Promise<(T | Error)[]>,
): Promise<(T | Error)[]> {
	const results: (T | Error)[] = new Array(itemIndices.length);
	const chunkSize = request.batchSize * BATCHES_PER_CHUNK;
	const read = (start: number) => settleLimited(itemIndices.slice(start, start + chunkSize), request.batchSize, (i) => readImage(ctx, i));
	let model: Backbone | undefined;
	// Held for the whole run: while the next chunk downloads, no extraction holds the backbone,
	// and the cache may drop it then.
	let release: (() => void) | undefined;
	let next = itemIndices.length ? read(0) : undefined;
	// n8n's Stop execution ends the work at the next chunk instead of reading every image.
	const stopSignal = ctx.getExecutionCancelSignal?.();
	try {
		for (let start = 0; start < itemIndices.length; start += chunkSize) {
			const images = await next!;
			stopSignal?.throwIfAborted();
			const readable: number[] = [];
			images.forEach((r, k) => (r.status === 'fulfilled' ? readable.push(k) : (results[start + k] = asError(r.reason))));
			// Loaded before more images are fetched, so that a backbone that fails costs no downloads.
			if (readable.length && !model) {
				model = (await extractor()) as Backbone;
				release = model.hold();
			}
			next = start + chunkSize < itemIndices.length ? read(start + chunkSize) : undefined;
			if (readable.length) {
				const extracted = await extract(
					model!,
					readable.map((k) => (images[k] as PromiseFulfilledResult<Buffer>).value),
				);
				readable.forEach((k, j) => (results[start + k] = extracted[j]));
			}
		}
	} finally {
		release?.();
	}
	return results;
}

/** Promise.allSettled over `task` for each input, with at most `limit` tasks running at once. */
export async function settleLimited<T, R>(inputs: T[], limit: number, task: (input: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
	const results: PromiseSettledResult<R>[] = new Array(inputs.length);
	let next = 0;
	const worker = async () => {
		while (next < inputs.length) {
			const k = next++;
			results[k] = await task(inputs[k]).then(
				(value) => ({ status: 'fulfilled', value }) as const,
				(reason) => ({ status: 'rejected', reason }) as const,
			);
		}
	};
	await Promise.all(Array.from({ length: Math.min(limit, inputs.length) }, worker));
	return results;
}

export function asError(reason: unknown): Error {
	return reason instanceof Error ? reason : new Error(String(reason));
}

/** Errors already written to the log: a run-level error becomes one error item per input item. */
const logged = new WeakSet<object>();

/**
 * Error items and messages reach webhook callers: the server folders they name are replaced by
 * placeholders, and what was hidden (the full text, the detail meant for the log) goes to n8n's log.
 */
export function toNodeError(ctx: IExecuteFunctions, error: unknown, itemIndex?: number): NodeOperationError {
	if (error instanceof NodeOperationError) return error;
	const where = itemIndex === undefined ? '' : `Item ${itemIndex}: `;
	const original = errorMessage(error);
	const originalHint = error instanceof TransferLearningError ? error.hint : undefined;
	const detail = error instanceof TransferLearningError ? error.logDetail : undefined;
	const message = `${where}${redactPaths(original)}`;
	const hint = originalHint && redactPaths(originalHint);
	if ((detail || message !== where + original || hint !== originalHint) && error instanceof Object && !logged.has(error)) {
		logged.add(error);
		ctx.logger.warn(`${ctx.getNode().name}: ${original}${detail ? ` (${detail})` : ''}`, { hint: originalHint });
	}
	const nodeError = new NodeOperationError(ctx.getNode(), message, { itemIndex, description: hint });
	// n8n swaps a message that mentions a system error code (ENOENT, ECONNREFUSED, ...) for a
	// generic sentence that names neither the item nor the file or address; ours say both.
	nodeError.message = message;
	return nodeError;
}

/**
 * The item n8n takes for an error: json holding only `error` and `details`. n8n sends such items to
 * the node's error output under "Continue (using error output)", adding the fields of the input
 * item they pair with; setting `item.error` instead would make n8n replace the json and lose the
 * advice in `details`.
 */
export function errorItem(ctx: IExecuteFunctions, error: unknown, pairedItem: IPairedItemData | IPairedItemData[], itemIndex?: number): INodeExecutionData {
	const nodeError = toNodeError(ctx, error, itemIndex);
	const json: IDataObject = { error: nodeError.message };
	if (nodeError.description) json.details = nodeError.description;
	return { json, pairedItem };
}

/** Under Continue On Fail a failed item becomes an error item; otherwise the run stops, naming it. */
export function failedItem(ctx: IExecuteFunctions, error: unknown, itemIndex: number): INodeExecutionData {
	if (!ctx.continueOnFail()) throw toNodeError(ctx, error, itemIndex);
	return errorItem(ctx, error, { item: itemIndex }, itemIndex);
}

/**
 * A failure of the whole run (a parameter, the credential, the backbone). Under Continue On Fail it
 * must still come out as error items: a node that throws makes n8n pass its input on through the
 * success output as if nothing had failed.
 */
export function failedRun(ctx: IExecuteFunctions, error: unknown): INodeExecutionData[] {
	if (!ctx.continueOnFail()) throw toNodeError(ctx, error);
	return ctx.getInputData().map((_, i) => errorItem(ctx, error, { item: i }));
}
