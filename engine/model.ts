import { backboneKey, NORMALIZATIONS, type BackboneSpec } from './catalog';
import { TransferLearningError } from './errors';
import type { EpochRecord, Head, TrainingOptions } from './head';
import type { ResizeMode } from './image';
import type { Metrics } from './metrics';

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
	resizeMode: ResizeMode;
	/** Whether features were L2-normalised before the head (a model trained on normalised features needs them). */
	l2Normalize: boolean;
	labels: string[];
	featureSize: number;
	metrics: Metrics;
	evaluatedOn: 'validation' | 'training';
	history: EpochRecord[];
	bestEpoch: number;
	trainingOptions: TrainingOptions;
	examplesPerClass: Record<string, number>;
	trainCount: number;
	validationCount: number;
	head: HeadLayout;
}

/** How feature vectors were made; Extract Features outputs it and a model records the one it was trained on. */
export interface FeatureSource {
	backbone: BackboneSpec;
	resizeMode: ResizeMode;
	/** Whether the vectors were scaled to length 1. */
	l2Normalize: boolean;
}

export function featureSourceOf(manifest: ModelManifest): FeatureSource {
	return { backbone: manifest.backbone, resizeMode: manifest.resizeMode, l2Normalize: manifest.l2Normalize };
}

/** Equal exactly when the two give the same vectors for the same image. */
export function featureSourceKey(source: FeatureSource): string {
	return JSON.stringify([backboneKey(source.backbone), source.resizeMode, source.l2Normalize]);
}

const RESIZE_WORDS: Record<ResizeMode, string> = { centreCrop: 'centre crop', fitPad: 'fit with padding', stretch: 'stretch' };

export function describeFeatureSource(source: FeatureSource): string {
	return `${describeBackbone(source.backbone)}, ${RESIZE_WORDS[source.resizeMode]}${source.l2Normalize ? ', L2-normalised' : ''}`;
}

/** A catalog id says it all; two custom models at one address may still differ in how they are read. */
export function describeBackbone(spec: BackboneSpec): string {
	if (!spec.id.startsWith('custom:')) return spec.id;
	const layer = spec.featureLayer || spec.outputNode;
	return `${spec.id} (${spec.inputSize.width}x${spec.inputSize.height}, ${spec.normalization}${layer ? `, ${layer}` : ''})`;
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

/** Reads a feature source from item data, which anything upstream may have changed. */
export function parseFeatureSource(value: unknown): FeatureSource {
	const source = value as Partial<FeatureSource> | null;
	const backbone = source?.backbone as Partial<BackboneSpec> | undefined;
	const size = backbone?.inputSize;
	const valid =
		typeof backbone?.id === 'string' &&
		typeof backbone.url === 'string' &&
		['layers', 'graph', 'auto'].includes(backbone.format as string) &&
		Number.isInteger(size?.height) &&
		Number.isInteger(size?.width) &&
		Object.hasOwn(NORMALIZATIONS, backbone.normalization as string) &&
		Object.hasOwn(RESIZE_WORDS, source!.resizeMode as string) &&
		typeof source!.l2Normalize === 'boolean';
	if (!valid) {
		throw new TransferLearningError(
			'The field "featureSource" is not what Extract Features writes',
			'Pass the items from Extract Features on unchanged, or remove "featureSource" from them if the vectors come from elsewhere',
		);
	}
	return source as FeatureSource;
}

export interface TrainedModel {
	manifest: ModelManifest;
	head: Head;
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

/** Rebuilds a head and checks that weights and manifest agree, so a damaged file never classifies. */
export function decodeHead(manifest: ModelManifest, weights: Buffer): Head {
	const bad = (why: string) =>
		new TransferLearningError(`Model "${manifest.name}" version ${manifest.version} is damaged: ${why}`, 'Retrain the model or use another version');
	if (manifest.format !== MODEL_FORMAT) throw bad('it is not a transfer-learning model');
	if (manifest.formatVersion > MODEL_FORMAT_VERSION) {
		throw new TransferLearningError(
			`Model "${manifest.name}" was saved by a newer version of n8n-nodes-transfer-learning (format ${manifest.formatVersion})`,
			'Update the n8n-nodes-transfer-learning package',
		);
	}
	if (weights.length % 4) throw bad('the weights file has a partial value');
	const values = new Float32Array(weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.length));
	const take = ([offset, length]: [number, number], expected: number) => {
		if (length !== expected || offset + length > values.length) throw bad('the weights file does not match the manifest');
		return values.subarray(offset, offset + length);
	};
	const d = manifest.featureSize;
	let inputs = d;
	const layers = manifest.head.layers.map((l) => {
		const layer = { units: l.units, activation: l.activation, kernel: take(l.kernel, inputs * l.units), bias: take(l.bias, l.units) };
		inputs = l.units;
		return layer;
	});
	if (inputs !== manifest.labels.length) throw bad('the last layer does not have one output per label');
	return { labels: manifest.labels, featureSize: d, mean: take(manifest.head.mean, d), std: take(manifest.head.std, d), layers };
}

const BUNDLE_MAGIC = Buffer.from('TLMODEL1');

/** One file holding a whole model, for workflows that keep models in S3, Drive or a database. */
export function exportModel(model: TrainedModel): Buffer {
	const json = Buffer.from(JSON.stringify(model.manifest), 'utf8');
	const length = Buffer.alloc(4);
	length.writeUInt32LE(json.length);
	return Buffer.concat([BUNDLE_MAGIC, length, json, encodeHead(model.head).weights]);
}

export function importModel(file: Buffer): TrainedModel {
	const notAModel = new TransferLearningError(
		'The file is not an exported transfer-learning model',
		'Use the model file that Fine-Tune Head outputs (its "model" binary property)',
	);
	if (file.length < 12 || !file.subarray(0, 8).equals(BUNDLE_MAGIC)) throw notAModel;
	const length = file.readUInt32LE(8);
	if (12 + length > file.length) throw notAModel;
	let manifest: ModelManifest;
	try {
		manifest = JSON.parse(file.subarray(12, 12 + length).toString('utf8'));
	} catch {
		throw notAModel;
	}
	return { manifest, head: decodeHead(manifest, file.subarray(12 + length)) };
}
