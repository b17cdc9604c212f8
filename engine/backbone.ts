import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import * as tfc from '@tensorflow/tfjs-converter';
import { useBackend, type BackendReport } from './backend';
import { NORMALIZATIONS, backboneKey, type BackboneSpec } from './catalog';
import { fetchModelArtifacts, type HostAuth, type ModelArtifacts } from './download';
import { TransferLearningError, errorMessage } from './errors';
import type { BackendChoice } from './settings';

/**
 * A frozen pretrained network cut at its feature layer. `extract` turns decoded RGB images into
 * one feature vector each (global average pooling over a spatial feature map).
 */
export class Backbone {
	private disposed = false;

	private constructor(
		readonly spec: BackboneSpec,
		readonly backend: BackendReport,
		readonly featureSize: number,
		private readonly forward: (input: tf.Tensor4D) => tf.Tensor,
		private readonly release: () => void,
	) {}

	static async load(spec: BackboneSpec, options: { auth?: HostAuth; backend?: BackendChoice } = {}): Promise<Backbone> {
		const backend = await useBackend(options.backend);
		const artifacts = await fetchModelArtifacts(spec.url, options.auth);
		const format = spec.format === 'auto' ? detectFormat(artifacts) : spec.format;
		const handler = tf.io.fromMemory({
			modelTopology: artifacts.modelJson.modelTopology as tf.io.ModelArtifacts['modelTopology'],
			weightSpecs: artifacts.weightSpecs as tf.io.WeightsManifestEntry[],
			weightData: artifacts.weightData,
			format: format === 'graph' ? 'graph-model' : 'layers-model',
		});
		const { forward, release } =
			format === 'graph' ? await loadGraph(handler, spec, artifacts.location) : await loadLayers(handler, spec, artifacts.location);
		// One probe image tells the feature size and catches a model whose input does not match.
		const { height, width } = spec.inputSize;
		let featureSize: number;
		try {
			featureSize = tf.tidy(() => pool(forward(tf.zeros([1, height, width, 3]))).shape[1] as number);
		} catch (error) {
			release();
			throw new TransferLearningError(
				`The model at ${artifacts.location} does not accept ${width}x${height} RGB images: ${errorMessage(error)}`,
				'Set the input size the model was trained with',
			);
		}
		return new Backbone(spec, backend, featureSize, forward, release);
	}

	get key(): string {
		return `${backboneKey(this.spec)}@${this.backend.name}`;
	}

	/** `images` are RGB bytes of `spec.inputSize`, as `decodeImage` returns them. */
	extract(images: Uint8Array[]): Float32Array[] {
		if (this.disposed) throw new Error('Backbone was disposed');
		if (images.length === 0) return [];
		const { height, width } = this.spec.inputSize;
		const { scale, offset } = NORMALIZATIONS[this.spec.normalization];
		const pixels = height * width * 3;
		const batch = new Float32Array(images.length * pixels);
		images.forEach((image, i) => {
			if (image.length !== pixels) throw new Error(`image ${i} has ${image.length} bytes, expected ${pixels}`);
			const base = i * pixels;
			for (let j = 0; j < pixels; j++) batch[base + j] = image[j] * scale + offset;
		});
		// Re-activate our backend: another node in this process may have switched it.
		if (tf.getBackend() !== this.backend.name) tf.setBackend(this.backend.name);
		const flat = tf.tidy(() => pool(this.forward(tf.tensor4d(batch, [images.length, height, width, 3]))).dataSync());
		const out: Float32Array[] = [];
		for (let i = 0; i < images.length; i++) out.push(Float32Array.from(flat.subarray(i * this.featureSize, (i + 1) * this.featureSize)));
		return out;
	}

	dispose(): void {
		if (this.disposed) return;
		this.disposed = true;
		this.release();
	}
}

/** Spatial maps are averaged to one vector per image; anything else is flattened. */
function pool(output: tf.Tensor): tf.Tensor2D {
	if (output.rank === 4) return tf.mean(output, [1, 2]) as tf.Tensor2D;
	if (output.rank === 2) return output as tf.Tensor2D;
	return tf.reshape(output, [output.shape[0], -1]) as tf.Tensor2D;
}

function detectFormat(artifacts: ModelArtifacts): 'layers' | 'graph' {
	const { format, modelTopology } = artifacts.modelJson;
	if (format === 'graph-model') return 'graph';
	if (format === 'layers-model') return 'layers';
	return (modelTopology as { node?: unknown }).node ? 'graph' : 'layers';
}

async function loadLayers(handler: tf.io.IOHandler, spec: BackboneSpec, location: string) {
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

async function loadGraph(handler: tf.io.IOHandler, spec: BackboneSpec, location: string) {
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
