import { DATASETS_DIR, MIRROR_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { INodeExecutionData, INodeParameters } from 'n8n-workflow';
import { ModelStore, parseFeatureSource } from '../engine';
import { imageItem, runNode, type NodeRun } from './helpers/n8n';
import { serveFolder } from './helpers/server';

const BACKBONE = { backbone: 'mobilenet_v1_0.25_224' };
const V1_025 = path.join(MIRROR_DIR, 'tfjs-models', 'tfjs', 'mobilenet_v1_0.25_224', 'model.json');
const train = sample('cats_vs_dogs', 6, 'train');
const testImages = sample('cats_vs_dogs', 3, 'test');
const labelled = (images: typeof train) => images.map((e, i) => imageItem(e.bytes, { id: `img${i}`, animal: e.label }));
/** What Extract Features' output would be had it come from a vector store: the vector alone. */
const plain = (items: INodeExecutionData[]) => items.map((o) => ({ json: { animal: o.json.animal, features: o.json.features } }));

async function extract(parameters: INodeParameters, items: INodeExecutionData[]): Promise<INodeExecutionData[]> {
	const run = await runNode('extractFeatures', parameters, items);
	assert.equal(run.error, undefined, run.error?.message);
	return run.outputs[0];
}

function scoresOf(run: NodeRun): number[][] {
	assert.equal(run.error, undefined, run.error?.message);
	return run.outputs[0].map((o) => (o.json.scores as { label: string; score: number }[]).sort((a, b) => a.label.localeCompare(b.label)).map((s) => s.score));
}

test('Extract Features says how it made its features, and Fine-Tune Head fed them trains a model that preprocesses images the same way', async () => {
	const options = { resizeMode: 'fitPad', l2Normalize: true };
	const extracted = await extract({ ...BACKBONE, options }, labelled(train));
	assert.deepEqual(extracted[0].json.featureSource, {
		backbone: { id: 'mobilenet_v1_0.25_224', inputType: 'image', url: 'https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json', format: 'layers', inputSize: { height: 320, width: 320 }, normalization: 'minusOneToOne', featureLayer: 'conv_pw_13_relu', pooling: 'gem' },
		resizeMode: 'fitPad',
		l2Normalize: true,
		precision: 'int8',
	});

	// Fine-Tune Head's own options are left at their defaults (centre crop, no L2).
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'fed', inputType: 'features', label: '={{ $json.animal }}' }, extracted);
	assert.equal(trained.error, undefined, trained.error?.message);
	const { manifest } = await new ModelStore().load('fed');
	assert.equal(manifest.resizeMode, 'fitPad');
	assert.equal(manifest.l2Normalize, true);

	// Classify on images must then give what it gives on features extracted as for training.
	const onImages = await runNode('classify', { modelName: 'fed' }, testImages.map((e) => imageItem(e.bytes)));
	const onFeatures = await runNode('classify', { modelName: 'fed', inputType: 'features' }, await extract({ ...BACKBONE, options }, testImages.map((e) => imageItem(e.bytes))));
	const [a, b] = [scoresOf(onImages), scoresOf(onFeatures)];
	a.forEach((scores, i) => scores.forEach((s, j) => assert.ok(Math.abs(s - b[i][j]) < 1e-4, `image ${i}: ${a[i]} vs ${b[i]}`)));
});

test('Fine-Tune Head refuses features made in different ways, naming the item and both; under Continue the odd ones leave by the error output', async () => {
	const centre = await extract(BACKBONE, labelled(train));
	const padded = await extract({ ...BACKBONE, options: { resizeMode: 'fitPad' } }, labelled(train.slice(0, 2)));
	const mixed = [...centre.slice(0, 5), padded[0], ...centre.slice(5), padded[1]];
	const parameters = { ...BACKBONE, modelName: 'mixed', inputType: 'features', label: '={{ $json.animal }}' };
	const refused = await runNode('fineTuneHead', parameters, mixed);
	assert.match(refused.error?.message ?? '', /^Item 5: The features were made with mobilenet_v1_0\.25_224, fit with padding/);
	assert.match(refused.error!.message, /the other items' with mobilenet_v1_0\.25_224, centre crop/);
	assert.match(refused.error!.description ?? '', /Extract Features/);

	const split = await runNode('fineTuneHead', parameters, mixed, { errorOutput: true });
	assert.equal(split.error, undefined);
	assert.deepEqual(split.outputs[0][0].json.examplesPerClass, { cat: 6, dog: 6 });
	assert.deepEqual(split.outputs[0][0].json.skippedItems, [5, 13]);
	assert.deepEqual(split.outputs[1].map((o) => o.json.id), ['img0', 'img1']);
	assert.match(split.outputs[1][0].json.error as string, /^Item 5: The features were made with/);

	const wrongBackbone = await runNode('fineTuneHead', { ...parameters, backbone: 'mobilenet_v2_0.35_224' }, centre);
	assert.match(wrongBackbone.error?.message ?? '', /The features were made with mobilenet_v1_0\.25_224, centre crop, but "Backbone" is set to mobilenet_v2_0\.35_224/);
	const wrongResize = await runNode('fineTuneHead', { ...parameters, options: { resizeMode: 'stretch' } }, centre);
	assert.match(wrongResize.error?.message ?? '', /The features were made with mobilenet_v1_0\.25_224, centre crop, but "Resize Mode" is set to Stretch/);
});

test('Classify refuses features from another backbone or preprocessing, naming both; plain vectors of the right length pass', async () => {
	// A hidden layer: a linear head's solver may choose unit-length inputs, and a model that
	// normalises its inputs itself rightly takes normalised features too.
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'strict', label: '={{ $json.animal }}', training: { hiddenUnits: 16 } }, labelled(train));
	assert.equal(trained.error, undefined, trained.error?.message);
	const images = testImages.map((e) => imageItem(e.bytes));
	const expected = scoresOf(await runNode('classify', { modelName: 'strict' }, images));
	const classifyFeatures = (items: INodeExecutionData[]) => runNode('classify', { modelName: 'strict', inputType: 'features' }, items);

	const same = await extract(BACKBONE, images);
	assert.deepEqual(scoresOf(await classifyFeatures(same)), expected);
	assert.deepEqual(scoresOf(await classifyFeatures(plain(same))), expected);

	// The same weights read from a path with other pixel scaling: 256 values, other features.
	const custom = await extract({ backbone: 'custom', customModelUrl: V1_025, customNormalization: 'zeroToOne', customFeatureLayer: 'conv_pw_13_relu' }, images);
	assert.equal(custom[0].json.featureLength, 256);
	const otherBackbone = await classifyFeatures(custom);
	assert.match(otherBackbone.error?.message ?? '', /^Item 0: The features were made with custom:.*mobilenet_v1_0\.25_224\/model\.json \(224x224, zeroToOne, conv_pw_13_relu\), centre crop, but model "strict" version 1 was trained on mobilenet_v1_0\.25_224, centre crop/);
	assert.match(otherBackbone.error!.description ?? '', /Extract Features/);

	const padded = await classifyFeatures(await extract({ ...BACKBONE, options: { resizeMode: 'fitPad' } }, images));
	assert.match(padded.error?.message ?? '', /^Item 0: The features were made with mobilenet_v1_0\.25_224, fit with padding, but model "strict" version 1 was trained on mobilenet_v1_0\.25_224, centre crop/);
	const normalised = await classifyFeatures(await extract({ ...BACKBONE, options: { l2Normalize: true } }, images));
	assert.match(normalised.error?.message ?? '', /^Item 0: The features were made with mobilenet_v1_0\.25_224, centre crop, L2-normalised, but model "strict"/);
	const damaged = await classifyFeatures([{ json: { ...same[0].json, featureSource: { backbone: 'x' } } }]);
	assert.match(damaged.error?.message ?? '', /^Item 0: The field "featureSource" is not what Extract Features writes/);
	// Names every object has are no resize mode.
	const source = same[0].json.featureSource as { resizeMode: string };
	assert.doesNotThrow(() => parseFeatureSource(source));
	assert.throws(() => parseFeatureSource({ ...source, resizeMode: 'toString' }), /not what Extract Features writes/);
});

/** Runs a node three ways: stopping on error, "Continue" and "Continue (using error output)". */
async function everyOnError(type: Parameters<typeof runNode>[0], parameters: INodeParameters, items: INodeExecutionData[]) {
	return {
		stop: await runNode(type, parameters, items),
		regular: await runNode(type, parameters, items, { continueOnFail: true }),
		errorOutput: await runNode(type, parameters, items, { errorOutput: true }),
	};
}

/**
 * Checks the failure went where n8n users expect: a NodeOperationError when the node stops; error
 * items ({error, details} only, so that n8n recognises them) on `regularOutput` under "Continue";
 * and under "Continue (using error output)" those items alone on the error output, with the
 * failed input item's fields, as n8n routes them.
 */
function assertFailed(runs: Awaited<ReturnType<typeof everyOnError>>, expected: { stop: RegExp; items: { id?: string; error: RegExp }[]; regularOutput?: number }) {
	assert.match(runs.stop.error?.message ?? 'no error', expected.stop);
	assert.equal(runs.stop.outputs.length, 0);
	for (const run of [runs.regular, runs.errorOutput]) assert.equal(run.error, undefined, `the node threw: ${run.error?.message}`);

	const regular = runs.regular.outputs[expected.regularOutput ?? 0].filter((o) => 'error' in o.json);
	assert.equal(regular.length, expected.items.length, JSON.stringify(runs.regular.outputs));
	regular.forEach((o, k) => {
		assert.deepEqual(Object.keys(o.json).filter((key) => !['error', 'details'].includes(key)), []);
		assert.match(o.json.error as string, expected.items[k].error);
		assert.equal(typeof o.json.details, 'string');
	});

	const outputs = runs.errorOutput.outputs;
	const errors = outputs[outputs.length - 1];
	assert.equal(errors.length, expected.items.length, JSON.stringify(outputs));
	errors.forEach((o, k) => {
		assert.match(o.json.error as string, expected.items[k].error);
		if (expected.items[k].id) assert.equal(o.json.id, expected.items[k].id);
	});
	assert.ok(outputs.slice(0, -1).every((items) => items.every((o) => !('error' in o.json))), 'no error item on a success output');
}

const withIds = (items: INodeExecutionData[]) => items.map((o, i) => ({ ...o, json: { ...o.json, id: `in${i}` } }));

test('Extract Features: every failure leaves by the error output, or stops the run naming the item', async () => {
	const images = withIds(testImages.slice(0, 2).map((e) => imageItem(e.bytes)));
	assertFailed(await everyOnError('extractFeatures', { backbone: 'custom', customModelUrl: ' ' }, images), {
		stop: /^The custom model URL or path is empty/,
		items: [{ id: 'in0', error: /URL or path is empty/ }, { id: 'in1', error: /URL or path is empty/ }],
	});
	assertFailed(await everyOnError('extractFeatures', { backbone: 'custom', customModelUrl: '/nonexistent/model.json' }, images), {
		stop: /nonexistent\/model\.json/,
		items: [{ id: 'in0', error: /nonexistent\/model\.json/ }, { id: 'in1', error: /nonexistent\/model\.json/ }],
	});
	const withText = withIds([imageItem(testImages[0].bytes), imageItem(Buffer.from('text'), {}, 'a.txt', 'text/plain')]);
	assertFailed(await everyOnError('extractFeatures', BACKBONE, withText), { stop: /^Item 1: The data is not an image/, items: [{ id: 'in1', error: /^Item 1: The data is not an image/ }] });
});

test('Fine-Tune Head: every failure leaves by the error output, or stops the run naming the item', async () => {
	const items = withIds(labelled(train));
	assertFailed(await everyOnError('fineTuneHead', { ...BACKBONE, modelName: '../x', label: '={{ $json.animal }}' }, items), {
		stop: /"\.\.\/x" is not a valid model name/,
		items: [{ error: /"\.\.\/x" is not a valid model name/ }],
	});
	assertFailed(await everyOnError('fineTuneHead', { backbone: 'custom', customModelUrl: '/nonexistent/model.json', modelName: 'x', label: '={{ $json.animal }}' }, items), {
		stop: /nonexistent\/model\.json/,
		items: [{ error: /nonexistent\/model\.json/ }],
	});
	assertFailed(await everyOnError('fineTuneHead', { ...BACKBONE, modelName: 'x', label: 'cat' }, items), {
		stop: /at least 2 classes/,
		items: [{ error: /at least 2 classes/ }],
	});

	// A bad item is left out of training and leaves by the error output; the model is still saved.
	const broken = [...items];
	broken[3] = { ...broken[3], binary: imageItem(train[3].bytes.subarray(0, 1500)).binary };
	broken[4] = { json: { id: 'in4' }, binary: broken[4].binary };
	const runs = await everyOnError('fineTuneHead', { ...BACKBONE, modelName: 'kept', label: '={{ $json.animal }}' }, broken);
	assertFailed(runs, {
		// Labels are checked before any image is read.
		stop: /^Item 4: The label is missing or empty/,
		items: [
			{ id: 'in3', error: /^Item 3: The image file is truncated/ },
			{ id: 'in4', error: /^Item 4: The label is missing or empty/ },
		],
	});
	for (const run of [runs.regular, runs.errorOutput]) {
		const summary = run.outputs[0][0].json;
		assert.deepEqual(summary.examplesPerClass, { cat: 4, dog: 6 });
		assert.deepEqual(summary.skippedItems, [3, 4]);
	}

	// Labels Classify could never route are left out the same way, not a failure of the whole training.
	const misnamed = items.map((o, i) => (i === 1 ? { ...o, json: { ...o.json, animal: 'unknown' } } : i === 2 ? { ...o, json: { ...o.json, animal: 'cat,dog' } } : i === 5 ? { ...o, json: { ...o.json, animal: 'x'.repeat(201) } } : o));
	const renamed = await everyOnError('fineTuneHead', { ...BACKBONE, modelName: 'misnamed', label: '={{ $json.animal }}' }, misnamed);
	assertFailed(renamed, {
		stop: /^Item 1: The label "unknown" cannot be used: "unknown" is reserved/,
		items: [
			{ id: 'in1', error: /^Item 1: The label "unknown" cannot be used: "unknown" is reserved/ },
			{ id: 'in2', error: /^Item 2: The label "cat,dog" cannot be used: it holds a comma/ },
			{ id: 'in5', error: /^Item 5: The label "x{50}" cannot be used: it is longer than 200 characters/ },
		],
	});
	for (const run of [renamed.regular, renamed.errorOutput]) assert.deepEqual(run.outputs[0][0].json.skippedItems, [1, 2, 5]);
});

test('Classify: every failure leaves by the error output, or stops the run naming the item', async () => {
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'routed', label: '={{ $json.animal }}', options: { outputModelFile: true } }, labelled(train));
	assert.equal(trained.error, undefined, trained.error?.message);
	const image = imageItem(testImages[0].bytes).binary!;
	const items = withIds([{ json: { model: 'routed' }, binary: image }, { json: { model: 'nope' }, binary: image }, { json: { model: 'routed' } }]);
	assertFailed(await everyOnError('classify', { modelName: '={{ $json.model }}' }, items), {
		stop: /^Item 1: There is no model named "nope"/,
		items: [{ id: 'in1', error: /^Item 1: There is no model named "nope"/ }, { id: 'in2', error: /^Item 2: The item has no binary property "data"/ }],
	});

	// "unknown" names the output of unsure items; it cannot also be a class.
	assertFailed(await everyOnError('classify', { modelName: 'routed', routeByClass: true, classNames: 'cat, unknown' }, items.slice(0, 1)), {
		stop: /^Class Names: "unknown" cannot be a class: "unknown" is reserved for predictions under the confidence threshold/,
		items: [{ id: 'in0', error: /"unknown" cannot be a class: "unknown" is reserved/ }],
		regularOutput: 2,
	});

	// A damaged stored version, and a damaged model file.
	const store = new ModelStore();
	await runNode('fineTuneHead', { ...BACKBONE, modelName: 'damaged', label: '={{ $json.animal }}' }, labelled(train));
	const weights = path.join(store.root, 'damaged', '1', 'head.bin');
	await fs.truncate(weights, 10);
	assertFailed(await everyOnError('classify', { modelName: 'damaged' }, items.slice(0, 1)), {
		stop: /^Item 0: Model "damaged" version 1 is damaged/,
		items: [{ id: 'in0', error: /^Item 0: Model "damaged" version 1 is damaged/ }],
	});
	const file = trained.outputs[0][0].binary!.model;
	const truncated = { ...file, data: Buffer.from(file.data, 'base64').subarray(0, 200).toString('base64') };
	assertFailed(await everyOnError('classify', { modelSource: 'binary', modelBinaryProperty: 'model' }, [{ json: { id: 'in0' }, binary: { ...image, model: truncated } }]), {
		stop: /^Item 0: The file is not an exported transfer-learning model/,
		items: [{ id: 'in0', error: /^Item 0: The file is not an exported transfer-learning model/ }],
	});

	// A model whose backbone cannot be loaded any more (it was trained on features from a path now gone).
	const vectors = plain(await extract(BACKBONE, labelled(train)));
	const gone = await runNode('fineTuneHead', { backbone: 'custom', customModelUrl: '/nonexistent/model.json', modelName: 'gone', inputType: 'features', label: '={{ $json.animal }}' }, vectors);
	assert.equal(gone.error, undefined, gone.error?.message);
	assertFailed(await everyOnError('classify', { modelName: 'gone' }, items.slice(0, 1)), {
		stop: /^Item 0: .*nonexistent\/model\.json/,
		items: [{ id: 'in0', error: /nonexistent\/model\.json/ }],
	});
});

test('Classify Class Names follow the label rules: no duplicates, at least one, none too long', async () => {
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'names', label: '={{ $json.animal }}' }, labelled(train));
	assert.equal(trained.error, undefined, trained.error?.message);
	const item = [imageItem(testImages[0].bytes)];
	const twice = await runNode('classify', { modelName: 'names', routeByClass: true, classNames: 'cat, dog, cat' }, item);
	assert.match(twice.error?.message ?? '', /^Class Names: "cat" is listed twice/);
	const none = await runNode('classify', { modelName: 'names', routeByClass: true, classNames: ' , ' }, item);
	assert.match(none.error?.message ?? '', /^Class Names: no class is named/);
	const long = await runNode('classify', { modelName: 'names', routeByClass: true, classNames: `cat, ${'d'.repeat(201)}` }, item);
	assert.match(long.error?.message ?? '', /^Class Names: "d{50}" cannot be a class: it is longer than 200 characters/);
});

test('Images are read a few at a time, never all at once', async () => {
	const relative = train.map((e) => e.file.slice(DATASETS_DIR.length + 1));
	let inFlight = 0;
	let most = 0;
	const server = await serveFolder(DATASETS_DIR, (_path, req, res) => {
		inFlight++;
		most = Math.max(most, inFlight);
		res.on('close', () => inFlight--);
		// Slow answers, so that reads started together are seen together.
		setTimeout(() => fs.readFile(path.join(DATASETS_DIR, decodeURIComponent(new URL(req.url!, 'http://x').pathname))).then((bytes) => res.end(bytes)), 40);
		return true;
	});
	// Image URLs on loopback are refused unless an administrator allows them.
	process.env.N8N_SSRF_ALLOWED_IP_RANGES = '127.0.0.1/32';
	try {
		const items = Array.from({ length: 36 }, (_, i) => ({ json: { url: server.url + relative[i % relative.length] } }));
		const run = await runNode('extractFeatures', { ...BACKBONE, imageSource: 'url', imageUrl: '={{ $json.url }}', options: { batchSize: 4 } }, items);
		assert.equal(run.error, undefined, run.error?.message);
		assert.equal(run.outputs[0].length, 36);
		assert.equal(server.requests.length, 36);
		assert.ok(most <= 4, `${most} images were read at once`);
		assert.ok(most >= 2, 'reads overlap');
	} finally {
		delete process.env.N8N_SSRF_ALLOWED_IP_RANGES;
		await server.close();
	}
});
