import type { BackboneSpec } from './catalog';
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
