import { sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import type { INodeExecutionData } from 'n8n-workflow';
import {
	Backbone,
	backboneKey,
	catalogBackbone,
	extractFeatures,
	isCatalogSpec,
	madeWithBackbone,
	ModelStore,
	predictHead,
	type ImageBackboneSpec,
} from '../engine';
import { imageItem, runNode, type NodeRun } from './helpers/n8n';

const ID = 'mobilenet_v1_0.25_224';
const train = sample('cats_vs_dogs', 6, 'train');
const testImages = sample('cats_vs_dogs', 3, 'test');

/** The spec Extract Features and Fine-Tune Head recorded for this id before the catalog read larger images with the generalised mean. */
const EARLIER: ImageBackboneSpec = {
	id: ID,
	inputType: 'image',
	url: 'https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json',
	format: 'layers',
	inputSize: { height: 224, width: 224 },
	normalization: 'minusOneToOne',
	featureLayer: 'conv_pw_13_relu',
};

function scoresOf(run: NodeRun): number[][] {
	assert.equal(run.error, undefined, run.error?.message);
	return run.outputs[0].map((o) => (o.json.scores as { label: string; score: number }[]).sort((a, b) => a.label.localeCompare(b.label)).map((s) => s.score));
}

test('a catalog id stands for its current settings and for the 224x224 average it stood for before; nothing else', () => {
	const current = catalogBackbone(ID);
	assert.equal(current.pooling, 'gem');
	assert.ok(current.inputSize.width > 224, JSON.stringify(current.inputSize));
	assert.ok(isCatalogSpec(current));
	assert.ok(isCatalogSpec(EARLIER));
	// The earlier spec's key is the one the package wrote before `pooling` existed: its compiled graph and int8 calibration stay where they were.
	assert.equal(backboneKey(EARLIER), JSON.stringify([EARLIER.url, 'layers', { height: 224, width: 224 }, 'minusOneToOne', 'conv_pw_13_relu', undefined]));
	assert.notEqual(backboneKey(current), backboneKey(EARLIER));
	for (const other of [
		{ ...EARLIER, inputSize: { height: 256, width: 256 } },
		{ ...EARLIER, pooling: 'gem' as const },
		{ ...current, inputSize: { height: 224, width: 224 } },
		{ ...EARLIER, featureLayer: 'conv_pw_12_relu' },
	]) {
		assert.equal(isCatalogSpec(other), false, JSON.stringify(other));
	}
	// MobileNetV2 gained nothing measurable at twice the work: it keeps 224x224 and the average, one spec per id.
	const v2 = catalogBackbone('mobilenet_v2_0.35_224');
	assert.deepEqual([v2.inputSize, v2.pooling], [{ height: 224, width: 224 }, undefined]);
	assert.ok(isCatalogSpec(v2));
	assert.ok(madeWithBackbone(EARLIER, current), 'features of the earlier settings fit a node set to the same id');
	assert.equal(madeWithBackbone(EARLIER, catalogBackbone('mobilenet_v1_0.75_224')), false);
});

test('the generalised mean is at least the average of every channel, on each executor alike', async () => {
	const current = catalogBackbone(ID);
	const averaged = { ...current, pooling: undefined };
	const images = testImages.map((e) => e.bytes);
	const featuresOf = async (spec: ImageBackboneSpec, options: Parameters<typeof Backbone.load>[1]) => {
		const backbone = await Backbone.load(spec, options);
		try {
			return (await extractFeatures(backbone, images)) as Float32Array[];
		} finally {
			backbone.dispose();
		}
	};
	const gem = await featuresOf(current, { backend: 'onnxruntime', precision: 'float32' });
	const mean = await featuresOf(averaged, { backend: 'onnxruntime', precision: 'float32' });
	// Power mean inequality on ReLU outputs: equal only where a channel is constant over the map.
	gem.forEach((g, i) => {
		g.forEach((v, c) => assert.ok(v >= mean[i][c] - 1e-5, `image ${i} channel ${c}: ${v} < ${mean[i][c]}`));
		assert.ok(g.filter((v, c) => v > mean[i][c] * 1.05 + 1e-6).length > g.length / 2, `image ${i}: GeM barely differs from the average`);
	});
	// The TF.js paths (compiled, and the layers model as TF.js loads it at the spec's size) pool alike.
	for (const options of [{ backend: 'wasm' as const }, { backend: 'wasm' as const, compile: false }]) {
		const other = await featuresOf(current, options);
		other.forEach((f, i) => f.forEach((v, c) => assert.ok(Math.abs(v - gem[i][c]) <= 1e-3 * (1 + Math.abs(gem[i][c])), `${JSON.stringify(options)} image ${i} channel ${c}: ${v} vs ${gem[i][c]}`)));
	}
});

test('features an earlier Extract Features made at 224x224 train a model that Classify still reads at 224x224 with the average, exactly', async () => {
	const backbone = await Backbone.load(EARLIER, { precision: 'float32' });
	const newer = await Backbone.load(catalogBackbone(ID), { precision: 'float32' });
	try {
		const source = { backbone: EARLIER, resizeMode: 'centreCrop', l2Normalize: false, precision: 'float32' };
		const earlier = (await extractFeatures(backbone, train.map((e) => e.bytes))) as Float32Array[];
		const items: INodeExecutionData[] = earlier.map((f, i) => ({ json: { animal: train[i].label, features: Array.from(f), featureSource: source } }));
		const trained = await runNode('fineTuneHead', { backbone: ID, modelName: 'earlier', inputType: 'features', label: '={{ $json.animal }}' }, items);
		assert.equal(trained.error, undefined, trained.error?.message);
		const { manifest, head } = await new ModelStore().load('earlier');
		assert.deepEqual(manifest.backbone, EARLIER);

		const onImages = scoresOf(await runNode('classify', { modelName: 'earlier' }, testImages.map((e) => imageItem(e.bytes))));
		const at224 = predictHead(head, (await extractFeatures(backbone, testImages.map((e) => e.bytes))) as Float32Array[]);
		const sorted = (p: Float32Array) => head.labels.map((label, j) => [label, p[j]] as const).sort((a, b) => a[0].localeCompare(b[0])).map((x) => x[1]);
		assert.deepEqual(onImages, at224.map(sorted), 'Classify computed what the 224x224 features give, to the last bit');
		// The same head on features of the current settings would say something else.
		const atCurrent = predictHead(head, (await extractFeatures(newer, testImages.map((e) => e.bytes))) as Float32Array[]);
		assert.notDeepEqual(atCurrent.map(sorted), onImages);

		// Features of the current settings are not what the model was trained on, and the message says how they differ.
		const current = await runNode('extractFeatures', { backbone: ID, options: { precision: 'float32' } }, testImages.map((e) => imageItem(e.bytes)));
		assert.equal(current.error, undefined, current.error?.message);
		const refused = await runNode('classify', { modelName: 'earlier', inputType: 'features' }, current.outputs[0]);
		assert.match(refused.error?.message ?? '', /^Item 0: The features were made with mobilenet_v1_0\.25_224, centre crop, but model "earlier" version 1 was trained on mobilenet_v1_0\.25_224 \(224x224, average pooling\), centre crop/);
	} finally {
		backbone.dispose();
		newer.dispose();
	}
});
