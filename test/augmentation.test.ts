import { sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { catalogBackbone, IMAGE_VIEWS, loadBackbone, ModelStore } from '../engine';
import { classifyViews, extractViewFeatures } from '../engine/inputs/views';
import { imageItem, runNode } from './helpers/n8n';

const BACKBONE = { backbone: 'mobilenet_v1_0.25_224' };
const train = sample('cats_vs_dogs', 8, 'train');
const testImages = sample('cats_vs_dogs', 2, 'test');

test('Fine-Tune Head with Augmentation learns every view and says so; Classify with Test-Time Averaging averages them', async () => {
	const items = [...train.map((e) => imageItem(e.bytes, { animal: e.label })), imageItem(Buffer.from('not an image'), { animal: 'cat' })];
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'views', label: '={{ $json.animal }}', options: { augmentation: true } }, items, { continueOnFail: true });
	assert.equal(trained.error, undefined, trained.error?.message);
	const [result, skipped] = trained.outputs[0];
	assert.deepEqual(result.json.augmentation, { views: [...IMAGE_VIEWS] });
	assert.equal((result.json.solver as { method: string }).method, 'lbfgs');
	assert.deepEqual(result.json.skippedItems, [16], 'the bad image is left out alone');
	assert.match(String(skipped.json.error), /^Item 16: The data is not an image/);
	const model = await new ModelStore().load('views', 'latest');
	assert.deepEqual(model.manifest.augmentation, { views: [...IMAGE_VIEWS] });
	assert.equal(model.manifest.trainCount + model.manifest.validationCount, 16, 'examples are images, not views');

	const averaged = await runNode('classify', { modelName: 'views', topK: 2, options: { testTimeAveraging: true } }, testImages.map((e) => imageItem(e.bytes)));
	assert.equal(averaged.error, undefined, averaged.error?.message);
	const backbone = await loadBackbone(catalogBackbone(BACKBONE.backbone));
	const views = (await extractViewFeatures(backbone, testImages.map((e) => e.bytes))) as Float32Array[][];
	const expected = classifyViews(model.head, views, { topK: 2 });
	averaged.outputs[0].forEach((item, i) => {
		assert.equal(item.json.label, expected[i].label);
		assert.ok(Math.abs((item.json.confidence as number) - expected[i].confidence) < 1e-5, `item ${i}: ${item.json.confidence} vs ${expected[i].confidence}`);
	});
	const plain = await runNode('classify', { modelName: 'views', topK: 2 }, testImages.map((e) => imageItem(e.bytes)));
	assert.ok(
		plain.outputs[0].some((item, i) => Math.abs((item.json.confidence as number) - (averaged.outputs[0][i].json.confidence as number)) > 1e-4),
		'without the option each image is classified from itself alone',
	);
});
