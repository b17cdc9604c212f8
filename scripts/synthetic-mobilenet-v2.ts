/**
 * MobileNetV2 1.0 (224x224, 1280 features) with random weights, for timing the standard
 * architecture when its real weights are not at hand. Built with TF.js layers, then serialised to
 * model files exactly as a saved layers model would be.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import type { ImageBackboneSpec, ModelArtifacts } from '../engine';

const BLOCKS: [expansion: number, channels: number, repeats: number, stride: number][] = [
	[1, 16, 1, 1],
	[6, 24, 2, 2],
	[6, 32, 3, 2],
	[6, 64, 4, 2],
	[6, 96, 3, 1],
	[6, 160, 3, 2],
	[6, 320, 1, 1],
];

export async function syntheticMobileNetV2(): Promise<{ spec: ImageBackboneSpec; artifacts: ModelArtifacts }> {
	tf.setBackend('cpu'); // building needs no speed, and keeps the measured backends cold
	let layer = 0;
	const name = (kind: string) => `${kind}_${layer++}`;
	const convBnRelu = (x: tfl.SymbolicTensor, filters: number, kernel: number, stride: number, relu = true, depthwise = false) => {
		const conv = depthwise
			? tfl.layers.depthwiseConv2d({ kernelSize: kernel, strides: stride, padding: 'same', useBias: false, name: name('dw') })
			: tfl.layers.conv2d({ filters, kernelSize: kernel, strides: stride, padding: 'same', useBias: false, name: name('conv') });
		let y = tfl.layers.batchNormalization({ epsilon: 1e-3, name: name('bn') }).apply(conv.apply(x)) as tfl.SymbolicTensor;
		if (relu) y = tfl.layers.reLU({ maxValue: 6, name: name('relu') }).apply(y) as tfl.SymbolicTensor;
		return y;
	};
	const input = tfl.input({ shape: [224, 224, 3], name: 'input' });
	let x = convBnRelu(input, 32, 3, 2);
	let channels = 32;
	for (const [expansion, out, repeats, stride] of BLOCKS) {
		for (let r = 0; r < repeats; r++) {
			const s = r === 0 ? stride : 1;
			let y = expansion === 1 ? x : convBnRelu(x, channels * expansion, 1, 1);
			y = convBnRelu(y, 0, 3, s, true, true);
			y = convBnRelu(y, out, 1, 1, false);
			x = s === 1 && channels === out ? (tfl.layers.add({ name: name('add') }).apply([x, y]) as tfl.SymbolicTensor) : y;
			channels = out;
		}
	}
	x = convBnRelu(x, 1280, 1, 1);
	const model = tfl.model({ inputs: input, outputs: x });
	let saved: tf.io.ModelArtifacts | undefined;
	await model.save(tf.io.withSaveHandler(async (artifacts) => {
		saved = artifacts;
		return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
	}));
	model.dispose();
	const weightSpecs = saved!.weightSpecs!;
	const weightData = saved!.weightData as ArrayBuffer;
	return {
		spec: {
			id: 'synthetic_mobilenet_v2_1.00_224',
			url: 'synthetic:mobilenet_v2_1.00_224',
			format: 'layers',
			inputSize: { height: 224, width: 224 },
			normalization: 'minusOneToOne',
			featureLayer: (x.sourceLayer as tfl.layers.Layer).name,
		},
		artifacts: {
			modelJson: { format: 'layers-model', modelTopology: saved!.modelTopology, weightsManifest: [{ paths: [], weights: weightSpecs }] },
			weightSpecs,
			weightData,
			location: 'synthetic MobileNetV2 1.0',
		},
	};
}
