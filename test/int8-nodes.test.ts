/**
 * The Precision option through n8n's engine: Fine-Tune Head records the precision its features were
 * made in, Classify extracts in the same one, Extract Features says which ran.
 */
import { sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ModelStore } from '../engine';
import { imageItem, runNode } from './helpers/n8n';

const BACKBONE = { backbone: 'mobilenet_v1_0.25_224' };
const train = sample('cats_vs_dogs', 10, 'train');
const testImages = sample('cats_vs_dogs', 3, 'test');
const labelled = train.map((e) => imageItem(e.bytes, { animal: e.label }));

for (const precision of ['int8', 'float32'] as const) {
	test(`Fine-Tune Head with Precision ${precision} records it, and Classify runs the backbone in it`, async () => {
		const name = `pets-${precision}`;
		const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: name, label: '={{ $json.animal }}', options: { precision } }, labelled);
		assert.equal(trained.error, undefined, trained.error?.message);
		assert.equal((await new ModelStore().load(name)).manifest.precision, precision);
		// Classify has no Precision option of its own: TL_PRECISION says the opposite, the model wins.
		process.env.TL_PRECISION = precision === 'int8' ? 'float32' : 'int8';
		try {
			const classified = await runNode('classify', { modelName: name }, testImages.map((e) => imageItem(e.bytes)));
			assert.equal(classified.error, undefined, classified.error?.message);
			assert.deepEqual(classified.outputs[0].map((o) => o.json.precision), testImages.map(() => precision));
		} finally {
			delete process.env.TL_PRECISION;
		}
	});
}

test('Extract Features says which precision ran; Automatic picks int8 on ONNX Runtime for a mirrored backbone', async () => {
	const run = await runNode('extractFeatures', BACKBONE, testImages.map((e) => imageItem(e.bytes)));
	assert.equal(run.error, undefined, run.error?.message);
	assert.deepEqual(run.outputs[0].map((o) => [o.json.backend, o.json.precision]), testImages.map(() => ['onnxruntime', 'int8']));
	const float = await runNode('extractFeatures', { ...BACKBONE, options: { precision: 'float32' } }, testImages.map((e) => imageItem(e.bytes)));
	assert.deepEqual(float.outputs[0].map((o) => o.json.precision), testImages.map(() => 'float32'));
});
