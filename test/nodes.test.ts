import { DATA_DIR, DATASETS_DIR, TEMP_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import sharp from 'sharp';
import { Logger } from '@n8n/backend-common';
import { Container } from '@n8n/di';
import { LoadOptionsContext } from 'n8n-core';
import { NodeHelpers, Workflow, type IDataObject, type ILoadOptionsFunctions, type INode, type INodeExecutionData, type INodeParameters, type INodeProperties, type INodeType, type IWorkflowExecuteAdditionalData } from 'n8n-workflow';
import { Classify } from '../nodes/Classify/Classify.node';
import { ExtractFeatures } from '../nodes/ExtractFeatures/ExtractFeatures.node';
import { FineTuneHead } from '../nodes/FineTuneHead/FineTuneHead.node';
import { imageItem, runNode } from './helpers/n8n';
import { serveFolder } from './helpers/server';
import { ModelStore } from '../engine';
import { seededRandom } from '../engine/head/random';

const BACKBONE = { backbone: 'mobilenet_v1_0.25_224' };
const train = sample('cats_vs_dogs', 12, 'train');
const testImages = sample('cats_vs_dogs', 10, 'test');
const labelled = (images: typeof train) => images.map((e) => imageItem(e.bytes, { animal: e.label }));

test('Extract Features: JPEG and PNG binaries and image URLs become feature vectors, input kept', async () => {
	const png = await sharp(train[0].bytes).png().toBuffer();
	const run = await runNode('extractFeatures', BACKBONE, [imageItem(train[0].bytes, { id: 'a' }), imageItem(png, { id: 'b' }, 'x.png', 'image/png')]);
	assert.equal(run.error, undefined);
	const [jpegOut, pngOut] = run.outputs[0];
	assert.equal(jpegOut.json.id, 'a');
	assert.equal(jpegOut.json.featureLength, 256);
	assert.equal((jpegOut.json.features as number[]).length, 256);
	assert.equal(jpegOut.json.backbone, 'mobilenet_v1_0.25_224');
	assert.ok(['onnxruntime', 'wasm', 'tensorflow', 'cpu'].includes(jpegOut.json.backend as string));
	assert.deepEqual(pngOut.pairedItem, { item: 1 });
	// PNG is lossless, the JPEG was decoded once: the two vectors describe the same photo.
	const a = jpegOut.json.features as number[];
	const b = pngOut.json.features as number[];
	const cosine = a.reduce((n, v, i) => n + v * b[i], 0) / Math.hypot(...a) / Math.hypot(...b);
	assert.ok(cosine > 0.999, `cosine ${cosine}`);

	const server = await serveFolder(DATASETS_DIR);
	// Image URLs on loopback are refused unless an administrator allows them.
	process.env.N8N_SSRF_ALLOWED_IP_RANGES = '127.0.0.1/32';
	try {
		const relative = train[0].file.slice(DATASETS_DIR.length + 1);
		const byUrl = await runNode(
			'extractFeatures',
			{ ...BACKBONE, imageSource: 'url', imageUrl: '={{ $json.url }}', options: { l2Normalize: true } },
			[{ json: { url: server.url + relative } }],
		);
		const features = byUrl.outputs[0][0].json.features as number[];
		assert.ok(Math.abs(Math.hypot(...features) - 1) < 1e-5, 'L2-normalised');
		const missing = await runNode('extractFeatures', { ...BACKBONE, imageSource: 'url', imageUrl: '={{ $json.url }}' }, [{ json: { url: server.url + 'nope.jpg' } }]);
		assert.match(missing.error!.message, /^Item 0: The image server answered HTTP 404/);
	} finally {
		delete process.env.N8N_SSRF_ALLOWED_IP_RANGES;
		await server.close();
	}
});

test('Stop execution while Extract Features reads image URLs: it ends at the next chunk instead of fetching every image', async () => {
	let pressStop!: () => void;
	const stopWhen = new Promise<void>((resolve) => (pressStop = resolve));
	// Stop is pressed when the first image is asked for.
	const server = await serveFolder(DATASETS_DIR, () => (pressStop(), false));
	process.env.N8N_SSRF_ALLOWED_IP_RANGES = '127.0.0.1/32';
	try {
		const relative = train[0].file.slice(DATASETS_DIR.length + 1);
		const items = Array.from({ length: 320 }, (_, i) => ({ json: { url: `${server.url}${relative}?copy=${i}` } }));
		const run = await runNode('extractFeatures', { ...BACKBONE, imageSource: 'url', imageUrl: '={{ $json.url }}' }, items, { stopWhen });
		const settled = await run.nodeSettled;
		assert.equal(settled.status, 'rejected');
		// Chunks of 4 batches of 16: the one being read when Stop came, and the next, read ahead.
		assert.ok(server.requests.length <= 128, `${server.requests.length} of 320 images fetched`);
	} finally {
		delete process.env.N8N_SSRF_ALLOWED_IP_RANGES;
		await server.close();
	}
});

test('Extract Features: bad items name the item, and Continue On Fail keeps the good ones', async () => {
	const bomb = await sharp({ create: { width: 20000, height: 20000, channels: 3, background: '#888' }, limitInputPixels: false }).png({ compressionLevel: 9 }).toBuffer();
	const items: INodeExecutionData[] = [
		imageItem(train[0].bytes),
		imageItem(Buffer.from('hello, I am text'), {}, 'notes.txt', 'text/plain'),
		imageItem(train[1].bytes.subarray(0, 2000)),
		{ json: { nothing: true } },
		imageItem(bomb, {}, 'bomb.png', 'image/png'),
	];
	const failed = await runNode('extractFeatures', BACKBONE, items);
	assert.match(failed.error!.message, /^Item 1: The data is not an image/);
	assert.match(failed.error!.description ?? '', /JPEG, PNG/);
	const kept = await runNode('extractFeatures', BACKBONE, items, { continueOnFail: true });
	const out = kept.outputs[0];
	assert.equal(out.length, 5);
	assert.equal(out[0].json.featureLength, 256);
	assert.match(out[1].json.error as string, /Item 1: The data is not an image/);
	assert.match(out[2].json.error as string, /Item 2: The image file is truncated/);
	assert.match(out[3].json.error as string, /Item 3: The item has no binary property "data"/);
	assert.match(out[4].json.error as string, /Item 4: The image has more than 50000000 pixels/);
	assert.match(out[4].json.details as string, /TL_MAX_IMAGE_PIXELS/);
	assert.deepEqual(out.map((o) => o.pairedItem), [0, 1, 2, 3, 4].map((item) => ({ item })));
});

test('Fine-Tune Head then Classify: train on images, save versions, classify by name and from a file', async () => {
	const trained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'pets', label: '={{ $json.animal }}', options: { outputModelFile: true } }, labelled(train));
	assert.equal(trained.error, undefined, trained.error?.message);
	const [result] = trained.outputs[0];
	assert.equal(result.json.modelName, 'pets');
	assert.equal(result.json.version, 1);
	assert.deepEqual(result.json.labels, ['cat', 'dog']);
	assert.deepEqual(result.json.examplesPerClass, { cat: 12, dog: 12 });
	assert.ok((result.json.accuracy as number) >= 0.5);
	assert.equal((result.pairedItem as unknown[]).length, 24);
	assert.ok(result.binary?.model, 'model file attached');
	assert.equal(result.json.savedAs, 'model "pets" version 1 in the model store, and as a file in binary property "model"');
	assert.equal(result.json.examples, 24);
	// Rounded, each once, keyed by class name; the history only on request.
	for (const value of [result.json.accuracy, result.json.macroF1]) assert.equal(value, Number((value as number).toFixed(4)));
	assert.equal(result.json.metrics, undefined);
	assert.equal(result.json.history, undefined);
	const matrix = result.json.confusionMatrix as Record<string, Record<string, number>>;
	assert.deepEqual(Object.keys(matrix), ['cat', 'dog']);
	assert.deepEqual(Object.keys(matrix.cat), ['cat', 'dog']);
	const validated = (result.json.training as IDataObject).validationCount as number;
	assert.equal(matrix.cat.cat + matrix.cat.dog + matrix.dog.cat + matrix.dog.dog, validated);
	assert.equal((result.json.accuracy as number).toFixed(3), ((matrix.cat.cat + matrix.dog.dog) / validated).toFixed(3));
	assert.deepEqual(Object.keys(result.json.perClass as IDataObject), ['cat', 'dog']);
	// The training report: a PNG picture.
	const report = result.binary!.report;
	assert.equal(report.mimeType, 'image/png');
	assert.equal(report.fileName, 'pets-v1-report.png');
	const picture = await sharp(Buffer.from(report.data, 'base64')).metadata();
	assert.deepEqual([picture.format, picture.width, picture.height], ['png', 1200, 760]);

	const classified = await runNode('classify', { modelName: 'pets', topK: 2 }, testImages.map((e) => imageItem(e.bytes, { truth: e.label })));
	assert.equal(classified.error, undefined, classified.error?.message);
	const out = classified.outputs[0];
	assert.equal(out.length, 20);
	const correct = out.filter((o) => o.json.label === o.json.truth).length;
	// 12 examples a class on the smallest backbone: well above chance (10/20), not a benchmark.
	assert.ok(correct >= 14, `${correct}/20 correct`);
	assert.equal(out[0].json.model, 'pets');
	assert.equal(out[0].json.version, 1);
	const scores = out[0].json.scores as { label: string; score: number }[];
	assert.equal(scores.length, 2);
	assert.ok(Math.abs(scores[0].score + scores[1].score - 1) < 1e-5);
	assert.equal(out[0].json.confidence, scores[0].score);

	// The exported file classifies the same way, with no store involved.
	const fromFile = await runNode(
		'classify',
		{ modelSource: 'binary', modelBinaryProperty: 'model' },
		testImages.slice(0, 4).map((e) => ({ json: {}, binary: { ...imageItem(e.bytes).binary, model: result.binary!.model } })),
	);
	assert.deepEqual(fromFile.outputs[0].map((o) => o.json.label), out.slice(0, 4).map((o) => o.json.label));

	// A retrain lands as version 2 and Classify uses it at once.
	const retrained = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'pets', label: '={{ $json.animal }}', options: { includeHistory: true } }, labelled(train.slice(0, 20)));
	assert.equal(retrained.outputs[0][0].json.version, 2);
	const history = retrained.outputs[0][0].json.history as IDataObject[];
	assert.equal(history.length, (retrained.outputs[0][0].json.training as IDataObject).epochsRun);
	assert.deepEqual(Object.keys(history[0]), ['epoch', 'loss', 'accuracy', 'validationLoss', 'validationAccuracy']);
	const again = await runNode('classify', { modelName: 'pets' }, [imageItem(testImages[0].bytes)]);
	assert.equal(again.outputs[0][0].json.version, 2);
	const pinned = await runNode('classify', { modelName: 'pets', modelVersion: '1' }, [imageItem(testImages[0].bytes)]);
	assert.equal(pinned.outputs[0][0].json.version, 1);

	// The picker lists the store's models with their latest version, accuracy, classes and date.
	const classify = new Classify();
	const { results } = await classify.methods.listSearch.searchModels.call(loadOptionsContext({}), 'PE');
	assert.deepEqual(results.map((o) => o.value), ['pets']);
	assert.match(results[0].name, /^pets — v2 · \d+(\.\d)?% accuracy · 2 classes · \d{4}-\d{2}-\d{2}$/);
	assert.deepEqual((await classify.methods.listSearch.searchModels.call(loadOptionsContext({}), 'cats')).results, []);
	// Versions of the chosen model, latest first; the classes of the chosen version.
	const picked = { modelName: { __rl: true, mode: 'list', value: 'pets' } };
	const versions = await classify.methods.loadOptions.getModelVersions.call(loadOptionsContext(picked));
	assert.deepEqual(versions.map((o) => o.value), ['latest', '2', '1']);
	assert.deepEqual(versions.map((o) => o.name), ['Latest', 'Version 2', 'Version 1']);
	const classes = await classify.methods.loadOptions.getClassNames.call(loadOptionsContext({ ...picked, modelVersion: '1' }));
	assert.deepEqual(classes.map((o) => o.value), ['cat', 'dog']);
	// A name typed as an expression cannot be resolved in the editor: only "latest" is offered.
	const typed = await classify.methods.loadOptions.getModelVersions.call(loadOptionsContext({ modelName: { __rl: true, mode: 'name', value: '={{ $json.query.model }}' } }));
	assert.deepEqual(typed.map((o) => o.value), ['latest']);

	// The model chosen in the list, and the results under one key without the input fields.
	const grouped = await runNode(
		'classify',
		{ ...picked, modelVersion: '1', options: { resultField: 'classification', includeInputFields: false } },
		[imageItem(testImages[0].bytes, { truth: 'x' })],
	);
	assert.deepEqual(Object.keys(grouped.outputs[0][0].json), ['classification']);
	assert.equal((grouped.outputs[0][0].json.classification as IDataObject).version, 1);
	assert.equal((grouped.outputs[0][0].json.classification as IDataObject).label, out[0].json.label);
	assert.ok(grouped.outputs[0][0].binary?.data, 'the image stays attached');
	// By default the results come first, the input fields after them.
	assert.deepEqual(Object.keys(out[0].json).slice(0, 3), ['label', 'confidence', 'scores']);
	assert.equal(Object.keys(out[0].json).at(-1), 'truth');
});

/** n8n's own context for a node's list and option methods, with the node's current parameters. */
function loadOptionsContext(parameters: INodeParameters): ILoadOptionsFunctions {
	const node: INode = { id: '1', name: 'Classify', type: 'n8n-nodes-transfer-learning.classify', typeVersion: 1, position: [0, 0], parameters };
	const classify = new Classify();
	const nodeTypes = { getByName: () => classify, getByNameAndVersion: () => classify, getKnownTypes: () => ({}) } as never;
	const workflow = new Workflow({ nodes: [node], connections: {}, active: false, nodeTypes });
	return new LoadOptionsContext(workflow, node, { currentNodeParameters: parameters } as IWorkflowExecuteAdditionalData, 'modelName');
}

test('Classify routes each item to the output of its class, and unsure ones to unknown', async () => {
	await runNode('fineTuneHead', { ...BACKBONE, modelName: 'router', label: '={{ $json.animal }}' }, labelled(train));
	const items = testImages.map((e) => imageItem(e.bytes, { truth: e.label }));
	const routed = await runNode('classify', { modelName: 'router', routeByClass: true, classNames: ['dog', 'cat'] }, items);
	assert.equal(routed.outputs.length, 3);
	assert.ok(routed.outputs[0].every((o) => o.json.label === 'dog'));
	assert.ok(routed.outputs[1].every((o) => o.json.label === 'cat'));
	assert.equal(routed.outputs[0].length + routed.outputs[1].length, 20);
	// Typed in an expression: comma-separated.
	const unsure = await runNode('classify', { modelName: 'router', routeByClass: true, classNames: '={{ "cat,dog" }}', threshold: 1 }, items.slice(0, 3));
	assert.equal(unsure.outputs[2].length, 3);
	assert.ok(unsure.outputs[2].every((o) => o.json.label === 'unknown'));
	const mismatch = await runNode('classify', { modelName: 'router', routeByClass: true, classNames: 'cat, bird' }, items.slice(0, 1));
	assert.match(mismatch.error!.message, /do not match the classes of model "router"/);
	assert.match(mismatch.error!.description ?? '', /Set "Class Names" to: cat, dog/);
});

test('Fine-Tune Head from Extract Features output, and its input errors', async () => {
	const extracted = await runNode('extractFeatures', BACKBONE, labelled(train.slice(0, 6).concat(train.slice(12, 18))));
	const fromFeatures = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'from-features', inputType: 'features', label: '={{ $json.animal }}' }, extracted.outputs[0]);
	assert.equal(fromFeatures.outputs[0][0].json.version, 1);

	const items = labelled(train.slice(0, 4).concat(train.slice(12, 16)));
	items[2].json = {};
	const noLabel = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'x', label: '={{ $json.animal }}' }, items);
	assert.match(noLabel.error!.message, /^Item 2: The label is missing or empty/);
	const oneClass = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'x', label: 'cat' }, labelled(train.slice(0, 4)));
	assert.match(oneClass.error!.message, /at least 2 classes/);
	const badName = await runNode('fineTuneHead', { ...BACKBONE, modelName: '../../x', label: '={{ $json.animal }}' }, labelled(train.slice(0, 4)));
	assert.match(badName.error!.message, /not a valid model name/);

	// Continue On Fail: the broken image is left out, listed, and leaves as an error item; training goes on.
	const withBroken = labelled(train.slice(0, 4).concat(train.slice(12, 16)));
	withBroken[5] = imageItem(train[13].bytes.subarray(0, 1500), { animal: 'dog' });
	const kept = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'kept', label: '={{ $json.animal }}' }, withBroken, { continueOnFail: true });
	const out = kept.outputs[0][0].json;
	assert.equal(out.version, 1);
	assert.deepEqual(out.examplesPerClass, { cat: 4, dog: 3 });
	assert.deepEqual(out.skippedItems, [5]);
	assert.match(kept.outputs[0][1].json.error as string, /^Item 5: The image file is truncated/);
	const failedTraining = await runNode('fineTuneHead', { ...BACKBONE, modelName: 'x', label: 'cat' }, labelled(train.slice(0, 3)), { continueOnFail: true });
	assert.match(failedTraining.outputs[0][0].json.error as string, /at least 2 classes/);
});

test('Stop execution while Fine-Tune Head trains: the training stops at once, no version is saved, and the next run trains', async () => {
	const [template] = (await runNode('extractFeatures', BACKBONE, labelled(train.slice(0, 1)))).outputs[0];
	const random = seededRandom(7);
	// Enough examples that the training is still running when its first progress line is logged.
	const items = Array.from({ length: 1000 }, (_, i) => ({
		json: { ...template.json, animal: i % 2 ? 'cat' : 'dog', features: Array.from({ length: 256 }, (_, j) => random() + (j === i % 2 ? 1 : 0)) },
	}));
	const parameters = { ...BACKBONE, modelName: 'stopped', inputType: 'features', label: '={{ $json.animal }}' };
	// The editor's Stop button, pressed when the node logs the training's first progress.
	const logger = Container.get(Logger);
	const info = logger.info;
	const progress: string[] = [];
	let pressStop!: () => void;
	const stopWhen = new Promise<void>((resolve) => (pressStop = resolve));
	logger.info = (message: string, meta?: Parameters<Logger['info']>[1]) => {
		if (message.startsWith('Fine-Tune Head "stopped"')) progress.push(message), pressStop();
		info.call(logger, message, meta);
	};
	try {
		const stopped = await runNode('fineTuneHead', parameters, items, { stopWhen });
		const settled = await stopped.nodeSettled;
		assert.equal(settled.status, 'rejected');
		assert.match(String((settled as PromiseRejectedResult).reason), /abort/i);
	} finally {
		logger.info = info;
	}
	// Not one report after the Stop: the final fit on every example never began.
	assert.equal(progress.length, 1, progress.join('\n'));
	assert.match(progress[0], /candidate 1\//);
	assert.deepEqual(await new ModelStore().versions('stopped'), []);
	const next = await runNode('fineTuneHead', parameters, items);
	assert.equal(next.outputs[0][0].json.version, 1);
});

test('Classify errors name the item: unknown model, escaping name, wrong feature length', async () => {
	await runNode('fineTuneHead', { ...BACKBONE, modelName: 'errs', label: '={{ $json.animal }}' }, labelled(train.slice(0, 3).concat(train.slice(12, 15))));
	const unknown = await runNode('classify', { modelName: '={{ $json.model }}' }, [imageItem(testImages[0].bytes, { model: 'errs' }), imageItem(testImages[1].bytes, { model: 'nope' })]);
	assert.match(unknown.error!.message, /^Item 1: There is no model named "nope"/);
	// Webhook callers may see the error: it points at the Model list instead of naming the other models.
	assert.doesNotMatch(`${unknown.error!.message} ${unknown.error!.description}`, /errs/);
	assert.match(unknown.error!.description ?? '', /Model list/);
	const escaping = await runNode('classify', { modelName: '../../x' }, [imageItem(testImages[0].bytes)]);
	assert.match(escaping.error!.message, /^Item 0: "..\/..\/x" is not a valid model name/);
	const wrongLength = await runNode('classify', { modelName: 'errs', inputType: 'features' }, [{ json: { features: [1, 2, 3] } }]);
	assert.match(wrongLength.error!.message, /^Item 0: The features have 3 values but the model expects 256/);
	const kept = await runNode(
		'classify',
		{ modelName: '={{ $json.model }}' },
		[imageItem(testImages[0].bytes, { model: 'errs' }), imageItem(testImages[1].bytes, { model: 'nope' }), { json: { model: 'errs' } }],
		{ continueOnFail: true },
	);
	const out = kept.outputs[0];
	assert.deepEqual(out.map((o) => typeof o.json.label === 'string'), [true, false, false]);
	assert.match(out[1].json.error as string, /no model named "nope"/);
	assert.match(out[2].json.error as string, /no binary property "data"/);
	// "Continue (using error output)": failed items leave by the extra error output.
	const split = await runNode('classify', { modelName: '={{ $json.model }}' }, [imageItem(testImages[0].bytes, { model: 'errs' }), { json: { model: 'nope' } }], { errorOutput: true });
	assert.equal(split.outputs.length, 2);
	assert.equal(split.outputs[0].length, 1);
	assert.equal(split.outputs[0][0].json.model, 'errs');
	assert.match(split.outputs[1][0].json.error as string, /no model named "nope"/);
});

test('Classify declares one output per class name plus unknown, as n8n evaluates it', () => {
	const description = new Classify().description;
	const outputsFor = (parameters: INodeParameters) => {
		const node: INode = { id: '1', name: 'Classify', type: 'n8n-nodes-transfer-learning.classify', typeVersion: 1, position: [0, 0], parameters };
		const workflow = new Workflow({ nodes: [node], connections: {}, active: false, nodeTypes: { getByName: () => undefined, getByNameAndVersion: () => undefined, getKnownTypes: () => ({}) } as never });
		return NodeHelpers.getNodeOutputs(workflow, node, description).map((o) => (typeof o === 'string' ? o : o.displayName));
	};
	assert.deepEqual(outputsFor({ routeByClass: true, classNames: 'cat, dog ,bird' }), ['cat', 'dog', 'bird', 'unknown']);
	assert.deepEqual(outputsFor({ routeByClass: true, classNames: ['dog', 'cat'] }), ['dog', 'cat', 'unknown']);
	assert.deepEqual(outputsFor({ routeByClass: false }), ['Classified']);
});

test('every parameter of the three nodes explains itself, and Model File Property shows only with Output Model File', () => {
	const undescribed: string[] = [];
	const visit = (node: string, properties: INodeProperties[], path: string) => {
		for (const p of properties) {
			if (p.type !== 'notice' && p.type !== 'collection' && !p.description && !p.hint) undescribed.push(`${node}: ${path}${p.displayName}`);
			if (p.type === 'collection' && p.options) visit(node, p.options as INodeProperties[], `${path}${p.displayName} → `);
		}
	};
	for (const type of [new ExtractFeatures(), new FineTuneHead(), new Classify()]) visit(type.description.displayName, type.description.properties, '');
	assert.deepEqual(undescribed, []);
	const options = new FineTuneHead().description.properties.find((p) => p.name === 'options')!.options as INodeProperties[];
	const modelFile = options.find((p) => p.name === 'modelBinaryProperty')!;
	const shown = (parameters: INodeParameters) => NodeHelpers.displayParameter(parameters, modelFile, null, null);
	assert.equal(shown({ outputModelFile: true }), true);
	assert.equal(shown({ outputModelFile: false }), false);
	assert.equal(shown({}), false);
});

test('the Model Host credential is offered only for custom model URLs and hub text encoders', () => {
	const offered = (type: INodeType, parameters: INodeParameters) => {
		// The parameters as the editor keeps them: defaults filled in, hidden ones dropped.
		const kept = NodeHelpers.getNodeParameters(type.description.properties, parameters, true, false, null, type.description)!;
		const node: INode = { id: '1', name: 'n', type: 'x', typeVersion: 1, position: [0, 0], parameters: kept };
		return NodeHelpers.displayParameter(kept, type.description.credentials![0], node, type.description);
	};
	for (const type of [new ExtractFeatures(), new FineTuneHead()]) {
		const name = type.description.displayName;
		assert.equal(offered(type, {}), false, `${name}: default backbone`);
		assert.equal(offered(type, { backbone: 'mobilenet_v1_0.25_224' }), false, `${name}: catalog backbone`);
		assert.equal(offered(type, { backbone: 'custom', customModelUrl: 'https://x.example/model.json' }), true, `${name}: custom URL`);
		assert.equal(offered(type, { inputType: 'text' }), false, `${name}: bundled text encoder`);
		assert.equal(offered(type, { inputType: 'text', textBackbone: 'all_minilm_l6_v2' }), true, `${name}: hub text encoder`);
		// A custom backbone left behind when switching to text no longer counts.
		assert.equal(offered(type, { inputType: 'text', backbone: 'custom' }), false, `${name}: hidden custom backbone`);
	}
});

test('canvas subtitles name the backbone and the model, not raw ids', () => {
	const subtitle = (type: INodeType, parameters: INodeParameters) => {
		const node: INode = { id: '1', name: 'n', type: 'x', typeVersion: 1, position: [0, 0], parameters };
		const workflow = new Workflow({ nodes: [node], connections: {}, active: false, nodeTypes: { getByName: () => type, getByNameAndVersion: () => type, getKnownTypes: () => ({}) } as never });
		return workflow.expression.getSimpleParameterValue(node, type.description.subtitle!, 'manual', {});
	};
	assert.equal(subtitle(new ExtractFeatures(), { backbone: 'mobilenet_v2_1.00_224' }), 'MobileNet v2 1.00');
	assert.equal(subtitle(new ExtractFeatures(), { backbone: 'mobilenet_v1_1.0_224' }), 'MobileNet v1 1.00');
	assert.equal(subtitle(new ExtractFeatures(), { inputType: 'text', textBackbone: 'universal_sentence_encoder_lite' }), 'Universal Sentence Encoder Lite');
	assert.equal(subtitle(new Classify(), { modelSource: 'store', modelName: { __rl: true, mode: 'list', value: 'flowers' }, modelVersion: 'latest' }), 'flowers · latest');
	assert.equal(subtitle(new Classify(), { modelSource: 'store', modelName: { __rl: true, mode: 'list', value: 'flowers' }, modelVersion: '3' }), 'flowers · v3');
});

test('a catalog backbone that cannot be loaded is named in the message with the file and the backbones at hand, no server folder', async () => {
	// The test mirror holds MobileNet v2 0.35 and v1 0.25 and 0.75, not the default MobileNet v2 1.00.
	const run = await runNode('extractFeatures', {}, [imageItem(train[0].bytes)]);
	const message = run.error!.message;
	assert.match(message, /^The backbone MobileNet v2 1\.00 \(mobilenet_v2_1\.00_224\) cannot be loaded: .*<model mirror>\/teachable-machine-models\/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1\.00_224_no_top\/model\.json/);
	for (const id of ['mobilenet_v2_0.35_224', 'mobilenet_v1_0.25_224', 'mobilenet_v1_0.75_224']) assert.ok(message.includes(`(${id})`), `${id} listed in: ${message}`);
	assert.doesNotMatch(message, /Available here: .*mobilenet_v2_1\.00_224/);
	assert.match(run.error!.description ?? '', /Choose an available backbone/);
	// What a webhook caller would read names no server folder.
	const trained = await runNode('fineTuneHead', { modelName: 'unloadable', label: '={{ $json.animal }}' }, labelled(train.slice(0, 2).concat(train.slice(12, 14))), { continueOnFail: true });
	const shown = JSON.stringify(trained.outputs[0]);
	assert.match(shown, /The backbone MobileNet v2 1\.00 \(mobilenet_v2_1\.00_224\) cannot be loaded/);
	for (const folder of [DATA_DIR, TEMP_DIR]) assert.ok(!shown.includes(folder) && !message.includes(folder), `${folder} shown`);
});
