import { z } from 'zod';
import {
	backboneKey,
	CATALOG,
	catalogBackbone,
	customAddressProblem,
	inputTypeOf,
	INPUT_SIZE_RANGE,
	isCatalogSpec,
	MAX_ADDRESS_LENGTH,
	NORMALIZATIONS,
	type BackboneSpec,
	type NormalizationName,
} from '../backbones/catalog';
import { UNKNOWN_LABEL } from '../head/classifier';
import { hubTextSpecProblem } from '../text/hf-catalog';
import { TransferLearningError } from '../errors';
import type { Precision } from '../backbones/backbone';
import type { EpochRecord, Head, SolverReport, TrainingOptions } from '../head/head';
import { IMAGE_VIEWS, type ImageView, type ResizeMode } from '../inputs/image';
import type { Metrics } from '../head/metrics';

export const MODEL_FORMAT = 'n8n-transfer-learning-model';
export const MODEL_FORMAT_VERSION = 1;

/** Offsets and lengths, in float32 values, of each array in the weights file. */
interface HeadLayout {
	mean: [number, number];
	std: [number, number];
	layers: { units: number; activation: 'relu' | 'softmax'; kernel: [number, number]; bias: [number, number] }[];
}

/** What a trained model says about itself; stored as manifest.json beside the weights. */
export interface ModelManifest {
	format: typeof MODEL_FORMAT;
	formatVersion: number;
	name: string;
	version: number;
	createdAt: string;
	packageVersion: string;
	backbone: BackboneSpec;
	/** Images only: how they were brought to the backbone's input size. */
	resizeMode?: ResizeMode;
	/** Whether features were L2-normalised before the head (a model trained on normalised features needs them). */
	l2Normalize: boolean;
	/** Images only: the numbers the backbone computed the training features with; Classify uses the same. Absent: float32. */
	precision?: Precision;
	labels: string[];
	featureSize: number;
	metrics: Metrics;
	evaluatedOn: 'validation' | 'training';
	history: EpochRecord[];
	bestEpoch: number;
	trainingOptions: TrainingOptions;
	examplesPerClass: Record<string, number>;
	/** Examples the validation-split fit (which `metrics` and `history` describe) trained on. */
	trainCount: number;
	validationCount: number;
	/** Examples and epochs of the saved head's own training; absent from manifests written before they were recorded. */
	finalTrainCount?: number;
	finalEpochs?: number;
	/** How the head was fitted; absent from manifests written before the full-batch solver. */
	solver?: SolverReport;
	/** Images only, when the head also learned from these views of each training image. */
	augmentation?: { views: ImageView[] };
	head: HeadLayout;
}

/** How feature vectors were made; Extract Features outputs it and a model records the one it was trained on. */
export interface FeatureSource {
	backbone: BackboneSpec;
	/** Images only. */
	resizeMode?: ResizeMode;
	/** Whether the vectors were scaled to length 1. */
	l2Normalize: boolean;
	/** Images: what the backbone computed in. Absent: float32. */
	precision?: Precision;
}

export function featureSourceOf(manifest: ModelManifest): FeatureSource {
	return { backbone: manifest.backbone, ...(manifest.resizeMode ? { resizeMode: manifest.resizeMode } : {}), l2Normalize: manifest.l2Normalize, ...(manifest.precision ? { precision: manifest.precision } : {}) };
}

/** Equal exactly when the two give the same vectors for the same image, up to int8's rounding (precision is left out). */
export function featureSourceKey(source: FeatureSource): string {
	return JSON.stringify([backboneKey(source.backbone), source.resizeMode, source.l2Normalize]);
}

const RESIZE_WORDS: Record<ResizeMode, string> = { centreCrop: 'centre crop', fitPad: 'fit with padding', stretch: 'stretch' };

export function describeFeatureSource(source: FeatureSource): string {
	return `${describeBackbone(source.backbone)}${source.resizeMode ? `, ${RESIZE_WORDS[source.resizeMode]}` : ''}${source.l2Normalize ? ', L2-normalised' : ''}`;
}

/**
 * A catalog id says it all, unless the spec holds the settings the id stood for earlier; two custom
 * models at one address may still differ in how they are read.
 */
export function describeBackbone(spec: BackboneSpec): string {
	if (spec.inputType === 'text') return spec.id;
	const size = `${spec.inputSize.width}x${spec.inputSize.height}`;
	const pooling = spec.pooling === 'gem' ? 'generalised-mean pooling' : 'average pooling';
	if (!spec.id.startsWith('custom:')) {
		return Object.hasOwn(CATALOG, spec.id) && inputTypeOf(CATALOG[spec.id]) === 'image' && backboneKey(spec) !== backboneKey(catalogBackbone(spec.id)) ? `${spec.id} (${size}, ${pooling})` : spec.id;
	}
	const layer = spec.featureLayer || spec.outputNode;
	return `${spec.id} (${size}, ${spec.normalization}${layer ? `, ${layer}` : ''}${spec.pooling ? `, ${pooling}` : ''})`;
}

/**
 * Why a model trained on `trained` must not be given vectors made as `given`, or undefined when it
 * may. The model scales vectors to length 1 itself when it was trained so, whatever they came as.
 */
export function featureSourceMismatch(trained: FeatureSource, given: FeatureSource): string | undefined {
	const same =
		backboneKey(given.backbone) === backboneKey(trained.backbone) &&
		given.resizeMode === trained.resizeMode &&
		(trained.l2Normalize || !given.l2Normalize);
	return same ? undefined : `The features were made with ${describeFeatureSource(given)}`;
}

const whole = (min: number, max: number) => z.number().int().min(min).max(max);
const inputSide = whole(INPUT_SIZE_RANGE.min, INPUT_SIZE_RANGE.max);
const layerName = z.string().max(200).optional();

const imageBackboneSchema = z.object({
	inputType: z.literal('image').default('image'),
	id: z.string().max(MAX_ADDRESS_LENGTH + 'custom:'.length),
	url: z.string().min(1).max(MAX_ADDRESS_LENGTH),
	format: z.enum(['layers', 'graph', 'auto']),
	inputSize: z.object({ height: inputSide, width: inputSide }),
	normalization: z.enum(Object.keys(NORMALIZATIONS) as [NormalizationName, ...NormalizationName[]]),
	featureLayer: layerName,
	outputNode: layerName,
	pooling: z.literal('gem').optional(),
});
const useLiteSchema = z.object({
	inputType: z.literal('text'),
	id: z.string().max(200),
	url: z.string().min(1).max(MAX_ADDRESS_LENGTH),
	format: z.literal('use-lite'),
});
// backboneProblem checks a Hugging Face model's settings against its id.
const textBackboneSchema = z.discriminatedUnion('format', [
	useLiteSchema,
	useLiteSchema.extend({ format: z.literal('hf-onnx'), pooling: z.enum(['mean', 'cls']), maxTokens: whole(1, 8192), prefix: z.string().max(100).optional() }),
]);
/**
 * Specs saved before text input have no inputType: they are images. Dispatching on the field keeps
 * the image schema's own messages (a union would only say "Invalid input").
 */
const backboneSchema = z
	.custom<unknown>()
	.transform((value, ctx): BackboneSpec => {
		const schema = (value as { inputType?: unknown } | null)?.inputType === 'text' ? textBackboneSchema : imageBackboneSchema;
		const parsed = schema.safeParse(value);
		if (!parsed.success) {
			parsed.error.issues.forEach((issue) => ctx.addIssue(issue));
			return z.NEVER;
		}
		// Here, not in a refinement after the transform: zod runs those even on a value that failed.
		const problem = backboneProblem(parsed.data);
		if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
		return parsed.data;
	});
const resizeModeSchema = z.enum(Object.keys(RESIZE_WORDS) as [ResizeMode, ...ResizeMode[]]);

/** A resize mode for image features, none for text: the one an image model was trained with is what Classify resizes with. */
function checkResizeMode(value: { backbone: BackboneSpec; resizeMode?: ResizeMode }, ctx: z.RefinementCtx): void {
	const image = inputTypeOf(value.backbone) === 'image';
	if (image !== (value.resizeMode !== undefined)) {
		ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['resizeMode'], message: image ? 'image features need a resize mode' : 'text features have no resize mode' });
	}
}

const featureSourceSchema = z
	.object({ backbone: backboneSchema, resizeMode: resizeModeSchema.optional(), l2Normalize: z.boolean(), precision: z.enum(['float32', 'int8']).optional() })
	.superRefine(checkResizeMode);

/** Reads a feature source from item data, which anything upstream may have changed. */
export function parseFeatureSource(value: unknown): FeatureSource {
	const parsed = featureSourceSchema.safeParse(value);
	if (!parsed.success) {
		throw new TransferLearningError(
			'The field "featureSource" is not what Extract Features writes',
			'Pass the items from Extract Features on unchanged, or remove "featureSource" from them if the vectors come from elsewhere',
		);
	}
	return parsed.data;
}

export interface TrainedModel {
	manifest: ModelManifest;
	head: Head;
}

/**
 * Bounds on what a manifest may claim, far above what Fine-Tune Head writes but low enough that a
 * crafted one cannot make Classify allocate gigabytes. Save checks them too, so every model
 * trained here loads.
 */
export const MODEL_LIMITS = {
	/** JSON text; a 1000-class model's confusion matrix, pretty-printed, is about 11 MB. */
	manifestBytes: 16 * 1024 * 1024,
	labels: 1000,
	labelLength: 200,
	featureSize: 65536,
	hiddenUnits: 4096,
	/** Float32 values in the head: 256 MB. */
	headValues: 64 * 1024 * 1024,
};

/** What a model store folder and an exported model may be named. */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * Why `label` cannot be a class, or undefined when it can: Classify names its low-confidence output
 * `unknown` and splits Class Names at commas, so a class with either could never be routed.
 */
export function labelProblem(label: string): string | undefined {
	if (!label.trim()) return 'it is empty';
	if (label.length > MODEL_LIMITS.labelLength) return `it is longer than ${MODEL_LIMITS.labelLength} characters`;
	if (label === UNKNOWN_LABEL) return `"${UNKNOWN_LABEL}" is reserved for predictions under the confidence threshold`;
	if (label.includes(',')) return 'it holds a comma';
	return undefined;
}

/** Offset and length of an array in the weights file. */
const span = z.tuple([whole(0, MODEL_LIMITS.headValues), whole(0, MODEL_LIMITS.headValues)]);

/**
 * What a manifest must hold. The fields Classify computes with are checked for type, range and
 * agreement with each other; the training report (metrics, history, options) is only shown, so it
 * is checked for shape alone and bounded by the manifest's size.
 */
const manifestSchema = z
	.object({
		format: z.literal(MODEL_FORMAT),
		formatVersion: whole(1, MODEL_FORMAT_VERSION),
		name: z.string().regex(MODEL_NAME, 'not a valid model name'),
		version: whole(1, Number.MAX_SAFE_INTEGER),
		createdAt: z.string().max(64),
		packageVersion: z.string().max(64),
		backbone: backboneSchema,
		resizeMode: resizeModeSchema.optional(),
		l2Normalize: z.boolean(),
		precision: z.enum(['float32', 'int8']).optional(),
		labels: z
			.array(z.string().superRefine((label, ctx) => {
				const problem = labelProblem(label);
				if (problem) ctx.addIssue({ code: z.ZodIssueCode.custom, message: `the label "${label.slice(0, 50)}" cannot be used: ${problem}` });
			}))
			.min(2)
			.max(MODEL_LIMITS.labels),
		featureSize: whole(1, MODEL_LIMITS.featureSize),
		metrics: z.record(z.unknown()),
		evaluatedOn: z.enum(['validation', 'training']),
		history: z.array(z.record(z.unknown())),
		bestEpoch: whole(0, Number.MAX_SAFE_INTEGER),
		trainingOptions: z.record(z.unknown()),
		examplesPerClass: z.record(whole(0, Number.MAX_SAFE_INTEGER)),
		trainCount: whole(0, Number.MAX_SAFE_INTEGER),
		validationCount: whole(0, Number.MAX_SAFE_INTEGER),
		finalTrainCount: whole(0, Number.MAX_SAFE_INTEGER).optional(),
		finalEpochs: whole(0, Number.MAX_SAFE_INTEGER).optional(),
		solver: z.record(z.unknown()).optional(),
		augmentation: z.object({ views: z.array(z.enum(IMAGE_VIEWS)).max(IMAGE_VIEWS.length) }).optional(),
		head: z.object({
			mean: span,
			std: span,
			layers: z
				.array(z.object({ units: whole(1, MODEL_LIMITS.hiddenUnits), activation: z.enum(['relu', 'softmax']), kernel: span, bias: span }))
				.min(1)
				.max(2),
		}),
	})
	.superRefine((m, ctx) => {
		checkResizeMode(m, ctx);
		const fail = (path: (string | number)[], message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, path, message });
		const seen = new Set<string>();
		m.labels.forEach((label, i) => {
			if (seen.has(label)) fail(['labels', i], `the label "${label.slice(0, 50)}" is listed twice`);
			seen.add(label);
		});
		for (const [path, message] of layoutProblems(m as unknown as ModelManifest)) fail(['head', ...path], message);
	});

/**
 * A catalog id stands for the catalog's spec exactly (now or earlier: isCatalogSpec), so a manifest
 * cannot borrow one for another address; any other id is `custom:` and its address.
 */
function backboneProblem(spec: BackboneSpec): string | undefined {
	if (Object.hasOwn(CATALOG, spec.id)) {
		return isCatalogSpec(spec) ? undefined : `it names the catalog backbone "${spec.id}" with other settings or another address`;
	}
	if (spec.inputType === 'text') return hubTextSpecProblem(spec);
	if (spec.id !== `custom:${spec.url}`) return `its id "${spec.id.slice(0, 50)}" is neither a catalog backbone nor "custom:" and its address`;
	const address = customAddressProblem(spec.url);
	return address && `its address cannot be used: ${address}`;
}

/**
 * The head must be laid out as encodeHead writes it: mean, std, then each layer's kernel and bias,
 * back to back, sized by the feature size, the layer widths and the label count.
 */
function layoutProblems(m: ModelManifest): [(string | number)[], string][] {
	const problems: [(string | number)[], string][] = [];
	let at = 0;
	const expect = (path: (string | number)[], [offset, length]: [number, number], size: number) => {
		if (offset !== at || length !== size) problems.push([path, `should be ${size} values from ${at}, not ${length} from ${offset}`]);
		at = offset + length;
	};
	expect(['mean'], m.head.mean, m.featureSize);
	expect(['std'], m.head.std, m.featureSize);
	let inputs = m.featureSize;
	m.head.layers.forEach((layer, i) => {
		const last = i === m.head.layers.length - 1;
		if (layer.activation !== (last ? 'softmax' : 'relu')) problems.push([['layers', i, 'activation'], `should be ${last ? 'softmax' : 'relu'}`]);
		if (last && layer.units !== m.labels.length) problems.push([['layers', i, 'units'], `should be one per label (${m.labels.length})`]);
		expect(['layers', i, 'kernel'], layer.kernel, inputs * layer.units);
		expect(['layers', i, 'bias'], layer.bias, layer.units);
		inputs = layer.units;
	});
	if (at > MODEL_LIMITS.headValues) problems.push([[], `holds ${at} values, more than ${MODEL_LIMITS.headValues}`]);
	return problems;
}

/** Where a manifest was read (or is about to be written) decides how its problems are worded and what it may name. */
export type ManifestOrigin =
	| { from: 'store' | 'save'; name: string; version: number }
	/** A model file arrives with an item: from a webhook, a mailbox, a bucket, anyone. */
	| { from: 'file'; allowCustomBackbone: boolean };

export function damagedModel(origin: ManifestOrigin, why: string): TransferLearningError {
	if (origin.from === 'save') return new TransferLearningError(`Model "${origin.name}" cannot be saved: ${why}`, 'Change what the message names and train again');
	return origin.from === 'store'
		? new TransferLearningError(`Model "${origin.name}" version ${origin.version} is damaged: ${why}`, 'Retrain the model or use another version')
		: new TransferLearningError(`The model file is damaged: ${why}`, 'Use the model file Fine-Tune Head exported, unchanged');
}

/**
 * Checks a parsed manifest against the schema before anything reads what it names. A stored
 * model's custom backbone was typed by a workflow author of this n8n into Fine-Tune Head, who could
 * load it through Extract Features as well, so it stays allowed; a file's may come from anyone, so
 * it names a catalog backbone unless the workflow allows otherwise.
 */
export function parseManifest(raw: unknown, origin: ManifestOrigin): ModelManifest {
	const claimed = raw as Partial<ModelManifest> | null;
	if (!claimed || typeof claimed !== 'object' || claimed.format !== MODEL_FORMAT) throw damagedModel(origin, 'it is not a transfer-learning model');
	if (typeof claimed.formatVersion === 'number' && claimed.formatVersion > MODEL_FORMAT_VERSION) {
		throw new TransferLearningError(
			`${origin.from === 'file' ? 'The model file' : `Model "${origin.name}"`} was saved by a newer version of n8n-nodes-transfer-learning (format ${claimed.formatVersion})`,
			'Update the n8n-nodes-transfer-learning package',
		);
	}
	const parsed = manifestSchema.safeParse(raw);
	if (!parsed.success) throw damagedModel(origin, describeIssue(parsed.error.issues[0]));
	// The training report's fields were checked for shape only; they are shown, never computed with.
	const manifest = parsed.data as unknown as ModelManifest;
	if (origin.from !== 'file' && (manifest.name !== origin.name || manifest.version !== origin.version)) {
		throw damagedModel(origin, `its manifest is that of model "${manifest.name}" version ${manifest.version}`);
	}
	if (origin.from === 'file' && !origin.allowCustomBackbone && !Object.hasOwn(CATALOG, manifest.backbone.id)) {
		throw new TransferLearningError(
			'The model file names a custom backbone; model files may only name catalog backbones',
			'Retrain the model on a catalog backbone, or turn on "Allow Custom Backbone from Model File" in the Classify options if you trust every source of model files',
		);
	}
	return manifest;
}

function describeIssue(issue: z.ZodIssue): string {
	const path = issue.path.map((key) => (typeof key === 'number' ? `[${key}]` : `.${key}`)).join('').replace(/^\./, '');
	return `${path || 'the manifest'}: ${issue.message}`;
}

export function encodeHead(head: Head): { layout: HeadLayout; weights: Buffer } {
	const arrays: Float32Array[] = [];
	let offset = 0;
	const place = (a: Float32Array): [number, number] => {
		arrays.push(a);
		offset += a.length;
		return [offset - a.length, a.length];
	};
	const layout: HeadLayout = {
		mean: place(head.mean),
		std: place(head.std),
		layers: head.layers.map((l) => ({ units: l.units, activation: l.activation, kernel: place(l.kernel), bias: place(l.bias) })),
	};
	const all = new Float32Array(offset);
	let at = 0;
	for (const a of arrays) {
		all.set(a, at);
		at += a.length;
	}
	return { layout, weights: Buffer.from(all.buffer) };
}

/** Bytes of the weights file of a manifest parseManifest accepted: its layout is back to back. */
export function headBytes(manifest: ModelManifest): number {
	const last = manifest.head.layers[manifest.head.layers.length - 1].bias;
	return (last[0] + last[1]) * 4;
}

/** Rebuilds the head of a manifest parseManifest accepted; the weights must be exactly its size. */
export function decodeHead(manifest: ModelManifest, weights: Buffer, origin: ManifestOrigin): Head {
	if (weights.length !== headBytes(manifest)) throw damagedModel(origin, `the weights are ${weights.length} bytes, the manifest needs ${headBytes(manifest)}`);
	const values = new Float32Array(weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length));
	const take = ([offset, length]: [number, number]) => values.subarray(offset, offset + length);
	return {
		labels: manifest.labels,
		featureSize: manifest.featureSize,
		mean: take(manifest.head.mean),
		std: take(manifest.head.std),
		layers: manifest.head.layers.map((l) => ({ units: l.units, activation: l.activation, kernel: take(l.kernel), bias: take(l.bias) })),
		...(manifest.l2Normalize ? { l2Normalize: true } : {}),
	};
}

const BUNDLE_MAGIC = Buffer.from('TLMODEL1');

/** One file holding a whole model, for workflows that keep models in S3, Drive or a database. */
export function exportModel(model: TrainedModel): Buffer {
	const json = Buffer.from(JSON.stringify(model.manifest), 'utf8');
	const length = Buffer.alloc(4);
	length.writeUInt32LE(json.length);
	return Buffer.concat([BUNDLE_MAGIC, length, json, encodeHead(model.head).weights]);
}

/**
 * Reads a file exportModel wrote. The file is untrusted: its manifest is bounded before it is
 * parsed and checked before anything it names is read or fetched.
 */
export function importModel(file: Buffer, options: { allowCustomBackbone?: boolean } = {}): TrainedModel {
	const notAModel = new TransferLearningError(
		'The file is not an exported transfer-learning model',
		'Use the model file that Fine-Tune Head outputs (its "model" binary property)',
	);
	if (file.length < 12 || !file.subarray(0, 8).equals(BUNDLE_MAGIC)) throw notAModel;
	const length = file.readUInt32LE(8);
	const origin: ManifestOrigin = { from: 'file', allowCustomBackbone: options.allowCustomBackbone ?? false };
	if (length > MODEL_LIMITS.manifestBytes) throw damagedModel(origin, `its manifest is ${length} bytes, more than ${MODEL_LIMITS.manifestBytes}`);
	if (12 + length > file.length) throw notAModel;
	let raw: unknown;
	try {
		raw = JSON.parse(file.subarray(12, 12 + length).toString('utf8'));
	} catch {
		throw notAModel;
	}
	const manifest = parseManifest(raw, origin);
	return { manifest, head: decodeHead(manifest, file.subarray(12 + length), origin) };
}
