import { promises as fs } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import * as tfc from '@tensorflow/tfjs-converter';
import { useBackend, type BackendName, type BackendReport } from '../runtimes/backend';
import { GEM_POWER, NORMALIZATIONS, type ImageBackboneSpec } from './catalog';
import { CompiledTfjsModel, globalPool } from '../runtimes/compiled-tfjs';
import { CompileError, compileLayersModel, type CompiledPlan } from '../runtimes/compiler';
import { fetchModelArtifacts, writeAtomically, type HostAuth, type ModelArtifacts } from '../net/download';
import { TransferLearningError, errorMessage } from '../errors';
import { RefCounted } from '../ref-counted';
import { calibrate, compiledBase, OnnxExecutor, type Int8Calibration } from '../runtimes/onnx';
import { checkLocalModelFile, isHttpUrl, type LocalFileAccess } from '../inputs/paths';
import { cosineAgreement, networkStats, type Calibration, type Range } from '../runtimes/quantize';
import { settings, type BackendChoice, type PrecisionChoice } from '../settings';

export type Precision = 'float32' | 'int8';

/** Automatic keeps int8 only when its features point where float32's do, on average over the first batch. */
export const PARITY_MIN_MEAN_COSINE = 0.95;

/** A first batch smaller than this calibrates from the network's own ranges, where it has them. */
const MIN_CALIBRATION_IMAGES = 8;

/** How the int8 graph of a backbone was checked against float32, on its first batch of real images. */
export interface Int8Parity {
	calibration: Calibration;
	/** Images the ranges came from (0: the network's own ranges). */
	calibrationImages: number;
	/** Images of the first batch both graphs ran on. */
	images: number;
	meanCosine: number;
	minCosine: number;
	passed: boolean;
}

/**
 * Runs a batch through a network and returns pooled features, image after image. `normalised`
 * executors take float NHWC already scaled; `pixels` executors take the RGB bytes as decoded and
 * normalise inside the network.
 */
type Executor =
	| { input: 'normalised'; run(input: Float32Array, batch: number): Promise<Float32Array>; dispose(): void }
	| { input: 'pixels'; run(input: Uint8Array, batch: number): Promise<Float32Array>; dispose(): void };

export interface BackboneLoadOptions {
	auth?: HostAuth;
	backend?: BackendChoice;
	/**
	 * false runs the layers model as TF.js loads it, without folding batch norm or ONNX Runtime:
	 * the benchmark's baseline.
	 */
	compile?: boolean;
	/** Who may read a custom model given by path; see LocalFileAccess. */
	fileAccess?: LocalFileAccess;
	/** Default: TL_PRECISION. int8 needs ONNX Runtime; elsewhere the backbone runs in float32. */
	precision?: PrecisionChoice;
}

/** What the int8 graph is built from, until the first batch decides whether it is used. */
interface Int8Candidate {
	plan: CompiledPlan;
	artifacts: ModelArtifacts;
	float: OnnxExecutor;
	forced: boolean;
}

/**
 * A frozen pretrained network cut at its feature layer. `extract` turns decoded RGB images into
 * one feature vector each (global average pooling over a spatial feature map).
 *
 * Layers models are compiled (batch norm folded into the convolutions) and run on ONNX Runtime
 * when it loads, else on TF.js; anything that cannot be compiled runs as TF.js loads it.
 */
export class Backbone extends RefCounted {
	protected readonly kind = 'Backbone';
	private firstBatch?: Promise<Float32Array>;
	private int8Parity?: Int8Parity;

	private constructor(
		readonly spec: ImageBackboneSpec,
		readonly backend: BackendReport,
		readonly featureSize: number,
		private executor: Executor,
		private currentPrecision: Precision | undefined,
		private int8?: Int8Candidate,
	) {
		super();
	}

	/** float32 or int8; undefined until the first batch has run where int8 may be chosen. */
	get precision(): Precision | undefined {
		return this.currentPrecision;
	}

	/** How the int8 graph compared with float32, once the first batch has run. */
	get parity(): Int8Parity | undefined {
		return this.int8Parity;
	}

	static async load(spec: ImageBackboneSpec, options: BackboneLoadOptions = {}): Promise<Backbone> {
		// A catalog address is local only through the mirror, which the administrator set.
		if (!isHttpUrl(spec.url)) await checkLocalModelFile(spec.url, options.fileAccess, settings().maxDownloadBytes);
		return Backbone.fromArtifacts(spec, await fetchModelArtifacts(spec.url, options.auth, options.fileAccess), options);
	}

	/** A backbone from model files already in memory (the benchmark's synthetic model). */
	static async fromArtifacts(spec: ImageBackboneSpec, artifacts: ModelArtifacts, options: BackboneLoadOptions = {}): Promise<Backbone> {
		const choice = options.backend ?? settings().backend;
		const precision = options.precision ?? settings().precision;
		const format = spec.format === 'auto' ? detectFormat(artifacts) : spec.format;
		const passedOver: string[] = [];
		let plan: CompiledPlan | undefined;
		if (format === 'layers' && options.compile !== false) {
			try {
				plan = compileLayersModel(artifacts, spec);
			} catch (error) {
				if (!(error instanceof CompileError)) throw error;
				passedOver.push(`the model could not be compiled (${error.message})`);
			}
		}
		let executor: Executor | undefined;
		let report: BackendReport | undefined;
		if (plan && (choice === 'auto' || choice === 'onnxruntime')) {
			try {
				executor = await OnnxExecutor.create(plan, spec, artifacts);
				report = { name: 'onnxruntime' };
			} catch (error) {
				passedOver.push(`ONNX Runtime is not usable (${errorMessage(error).split('\n')[0]})`);
			}
		} else if (options.compile !== false && format === 'graph' && (choice === 'auto' || choice === 'onnxruntime')) {
			passedOver.push('graph models run on TF.js');
		}
		if (!executor) {
			const tfjs = await useBackend(choice === 'onnxruntime' ? 'auto' : choice);
			executor = plan ? new CompiledTfjsExecutor(plan, tfjs.name) : await loadTfjs(artifacts, format, spec, tfjs.name);
			const reasons = [...passedOver, ...(tfjs.fallbackReason ? [tfjs.fallbackReason] : [])];
			if (precision === 'int8') reasons.push('int8 runs on ONNX Runtime only, so this backbone computes in float32');
			report = { name: tfjs.name, ...(reasons.length && options.compile !== false ? { fallbackReason: reasons.join('; ') } : {}) };
			if (report.fallbackReason && (choice === 'auto' || choice === 'onnxruntime' || precision === 'int8')) {
				console.warn(`[transfer-learning] ${spec.id} runs on ${tfjs.name}: ${report.fallbackReason}`);
			}
		}
		// One probe image tells the feature size and catches a model whose input does not match.
		const { height, width } = spec.inputSize;
		let featureSize: number;
		try {
			featureSize = (await runImages(executor, spec, [new Uint8Array(height * width * 3)])).length;
		} catch (error) {
			executor.dispose();
			throw new TransferLearningError(
				`The model at ${artifacts.location} does not accept ${width}x${height} RGB images: ${errorMessage(error)}`,
				'Set the input size the model was trained with',
			);
		}
		const int8 = executor instanceof OnnxExecutor && precision !== 'float32' ? { plan: plan!, artifacts, float: executor, forced: precision === 'int8' } : undefined;
		return new Backbone(spec, report!, featureSize, executor, int8 ? undefined : 'float32', int8);
	}

	/** `images` are RGB bytes of `spec.inputSize`, as `decodeImage` returns them. */
	async extract(images: Uint8Array[]): Promise<Float32Array[]> {
		this.assertLive();
		if (images.length === 0) return [];
		if (this.int8) {
			if (this.firstBatch) {
				// Batches that arrive while the first one decides the precision wait for its choice.
				await this.firstBatch.catch(() => {});
				return this.extract(images);
			}
			this.firstBatch = this.chooseInt8(images);
			try {
				return split(await this.firstBatch, this.featureSize, images.length);
			} catch (error) {
				// Forced int8 that failed: the next batch tries again.
				this.firstBatch = undefined;
				throw error;
			}
		}
		return split(await runImages(this.executor, this.spec, images), this.featureSize, images.length);
	}

	/**
	 * Builds the int8 graph (ranges cached per backbone in `compiled/`: from this first batch when
	 * it is big enough, else from the network itself), runs both graphs on the batch and keeps int8
	 * when asked to or when its features agree with float32's; returns the features of the precision kept.
	 */
	private async chooseInt8(images: Uint8Array[]): Promise<Float32Array> {
		const { plan, artifacts, float, forced } = this.int8!;
		const pixels = batchPixels(this.spec, images);
		const normalization = NORMALIZATIONS[this.spec.normalization];
		const file = `${compiledBase(this.spec, artifacts)}-int8-calibration.json`;
		let saved = await readCalibration(file);
		let floatFeatures: Float32Array;
		let int8: OnnxExecutor | undefined;
		try {
			if (saved) {
				floatFeatures = await float.run(pixels, images.length);
			} else {
				const measured = await calibrate(plan, normalization, pixels, images.length);
				floatFeatures = measured.features;
				saved = { calibration: 'images', calibrationImages: images.length, ranges: measured.ranges, means: measured.means };
				if (images.length < MIN_CALIBRATION_IMAGES) {
					try {
						saved = { calibration: 'network', calibrationImages: 0, ...networkStats(plan) };
					} catch (error) {
						if (!(error instanceof CompileError)) throw error;
					}
				}
				const record = { calibration: saved.calibration, calibrationImages: saved.calibrationImages, ranges: [...saved.ranges], means: [...saved.means] };
				await writeAtomically(file, Buffer.from(JSON.stringify(record))).catch(() => {});
			}
			int8 = await OnnxExecutor.create(plan, this.spec, artifacts, saved);
			const int8Features = await int8.run(pixels, images.length);
			const agreement = cosineAgreement(split(int8Features, this.featureSize, images.length), split(floatFeatures, this.featureSize, images.length));
			const passed = agreement.mean >= PARITY_MIN_MEAN_COSINE;
			this.int8Parity = { calibration: saved.calibration, calibrationImages: saved.calibrationImages, images: images.length, meanCosine: agreement.mean, minCosine: agreement.min, passed };
			if (passed || forced) {
				if (!passed) console.warn(`[transfer-learning] ${this.spec.id} runs in int8 as asked, though its features agree with float32 only to a mean cosine of ${agreement.mean.toFixed(3)}`);
				this.executor = int8;
				this.currentPrecision = 'int8';
				float.dispose();
				this.int8 = undefined;
				return int8Features;
			}
			console.warn(`[transfer-learning] ${this.spec.id} runs in float32: its int8 features agree with float32 only to a mean cosine of ${agreement.mean.toFixed(3)} (${saved.calibration} calibration)`);
			// The next process calibrates again, on its own first batch.
			await fs.rm(file, { force: true }).catch(() => {});
		} catch (error) {
			if (forced) {
				int8?.dispose();
				throw error;
			}
			console.warn(`[transfer-learning] ${this.spec.id} runs in float32: the int8 graph failed (${errorMessage(error)})`);
			floatFeatures ??= await float.run(pixels, images.length);
		}
		int8?.dispose();
		this.int8 = undefined;
		this.currentPrecision = 'float32';
		return floatFeatures!;
	}

	protected release(): void {
		this.executor.dispose();
		this.int8?.float.dispose();
	}
}

function batchPixels(spec: ImageBackboneSpec, images: Uint8Array[]): Uint8Array {
	const { height, width } = spec.inputSize;
	const pixels = height * width * 3;
	images.forEach((image, i) => {
		if (image.length !== pixels) throw new Error(`image ${i} has ${image.length} bytes, expected ${pixels}`);
	});
	const batch = new Uint8Array(images.length * pixels);
	images.forEach((image, i) => batch.set(image, i * pixels));
	return batch;
}

/** Feeds decoded images to an executor in the form it takes; features come back flat. */
async function runImages(executor: Executor, spec: ImageBackboneSpec, images: Uint8Array[]): Promise<Float32Array> {
	const batch = batchPixels(spec, images);
	if (executor.input === 'pixels') return executor.run(batch, images.length);
	const { scale, offset } = NORMALIZATIONS[spec.normalization];
	const normalised = new Float32Array(batch.length);
	for (let j = 0; j < batch.length; j++) normalised[j] = batch[j] * scale + offset;
	return executor.run(normalised, images.length);
}

function split(flat: Float32Array, size: number, count: number): Float32Array[] {
	return Array.from({ length: count }, (_, i) => flat.slice(i * size, (i + 1) * size));
}

/** A calibration this package wrote, or undefined (absent, unreadable, or of another shape: calibrate again). */
async function readCalibration(file: string): Promise<(Int8Calibration & { calibrationImages: number }) | undefined> {
	try {
		const raw = JSON.parse(await fs.readFile(file, 'utf8')) as { calibration: Calibration; calibrationImages: number; ranges: [string, Range][]; means: [string, number[]][] };
		if (!['images', 'network'].includes(raw.calibration) || !Array.isArray(raw.ranges) || !Array.isArray(raw.means)) return undefined;
		if (!raw.ranges.every((r) => typeof r[0] === 'string' && r[1]?.length === 2 && r[1].every(Number.isFinite))) return undefined;
		if (!raw.means.every((m) => typeof m[0] === 'string' && Array.isArray(m[1]) && m[1].every(Number.isFinite))) return undefined;
		return { calibration: raw.calibration, calibrationImages: Number(raw.calibrationImages) || 0, ranges: new Map(raw.ranges), means: new Map(raw.means) };
	} catch {
		return undefined;
	}
}

/** TF.js executors switch the process-wide backend back to theirs: another node may have changed it. */
function onBackend(name: BackendName): void {
	if (tf.getBackend() !== name) tf.setBackend(name);
}

class CompiledTfjsExecutor {
	readonly input = 'normalised';
	private readonly model: CompiledTfjsModel;

	constructor(
		private readonly plan: CompiledPlan,
		private readonly backend: BackendName,
	) {
		onBackend(backend);
		this.model = new CompiledTfjsModel(plan);
	}

	async run(input: Float32Array, batch: number): Promise<Float32Array> {
		onBackend(this.backend);
		const [h, w, c] = this.plan.inputShape;
		return tf.tidy(() => this.model.predict(tf.tensor4d(input, [batch, h, w, c])).dataSync() as Float32Array);
	}

	dispose(): void {
		this.model.dispose();
	}
}

async function loadTfjs(artifacts: ModelArtifacts, format: 'layers' | 'graph', spec: ImageBackboneSpec, backend: BackendName): Promise<Executor> {
	const handler = tf.io.fromMemory({
		modelTopology: (format === 'layers' ? atInputSize(artifacts.modelJson.modelTopology, spec) : artifacts.modelJson.modelTopology) as tf.io.ModelArtifacts['modelTopology'],
		weightSpecs: artifacts.weightSpecs as tf.io.WeightsManifestEntry[],
		weightData: artifacts.weightData,
		format: format === 'graph' ? 'graph-model' : 'layers-model',
	});
	const { forward, release } = format === 'graph' ? await loadGraph(handler, spec, artifacts.location) : await loadLayers(handler, spec, artifacts.location);
	const { height, width } = spec.inputSize;
	return {
		input: 'normalised',
		run: async (input: Float32Array, batch: number) => {
			onBackend(backend);
			return tf.tidy(() => pool(forward(tf.tensor4d(input, [batch, height, width, 3])), spec.pooling === 'gem' ? GEM_POWER : undefined).dataSync() as Float32Array);
		},
		dispose: release,
	};
}

/**
 * The layers topology with its input at the spec's size: Keras records the size a network was built
 * for, but a convolutional one reads others, as the compiled paths let it (a catalog backbone reads
 * images larger than its training size).
 */
function atInputSize(topology: unknown, spec: ImageBackboneSpec): unknown {
	const copy = structuredClone(topology) as { model_config?: unknown };
	const model = (copy.model_config ?? copy) as { config?: { layers?: unknown } | unknown[] };
	const layers = (Array.isArray(model.config) ? model.config : model.config?.layers) as { config?: { batch_input_shape?: (number | null)[] } }[] | undefined;
	for (const layer of Array.isArray(layers) ? layers : []) {
		const shape = layer.config?.batch_input_shape;
		if (shape?.length === 4) layer.config!.batch_input_shape = [shape[0], spec.inputSize.height, spec.inputSize.width, shape[3]];
	}
	return copy;
}

/** Spatial maps are pooled to one vector per image as the spec says; anything else is flattened. */
function pool(output: tf.Tensor, power: number | undefined): tf.Tensor2D {
	if (output.rank === 4) return globalPool(output, power) as tf.Tensor2D;
	if (output.rank === 2) return output as tf.Tensor2D;
	return tf.reshape(output, [output.shape[0], -1]) as tf.Tensor2D;
}

function detectFormat(artifacts: ModelArtifacts): 'layers' | 'graph' {
	const { format, modelTopology } = artifacts.modelJson;
	if (format === 'graph-model') return 'graph';
	if (format === 'layers-model') return 'layers';
	return (modelTopology as { node?: unknown }).node ? 'graph' : 'layers';
}

async function loadLayers(handler: tf.io.IOHandler, spec: ImageBackboneSpec, location: string) {
	let model: tfl.LayersModel;
	try {
		model = await tfl.loadLayersModel(handler);
	} catch (error) {
		throw new TransferLearningError(`Could not load the layers model at ${location}: ${errorMessage(error)}`);
	}
	let output = model.outputs[0];
	if (spec.featureLayer) {
		const layer = model.layers.find((l) => l.name === spec.featureLayer);
		if (!layer) {
			model.dispose();
			const names = model.layers.slice(-8).map((l) => l.name);
			throw new TransferLearningError(
				`The model has no layer named "${spec.featureLayer}"`,
				`Use one of its layers, for example the last ones: ${names.join(', ')}`,
			);
		}
		output = layer.output as tfl.SymbolicTensor;
	}
	const truncated = output === model.outputs[0] ? model : tfl.model({ inputs: model.inputs, outputs: output });
	return {
		forward: (input: tf.Tensor4D) => truncated.predict(input) as tf.Tensor,
		release: () => model.dispose(),
	};
}

async function loadGraph(handler: tf.io.IOHandler, spec: ImageBackboneSpec, location: string) {
	let model: tfc.GraphModel;
	try {
		model = await tfc.loadGraphModel(handler);
	} catch (error) {
		throw new TransferLearningError(`Could not load the graph model at ${location}: ${errorMessage(error)}`);
	}
	return {
		forward: (input: tf.Tensor4D) =>
			(spec.outputNode ? model.execute(input, spec.outputNode) : model.predict(input)) as tf.Tensor,
		release: () => model.dispose(),
	};
}
