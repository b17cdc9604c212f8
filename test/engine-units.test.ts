import { DATASETS_DIR, TEMP_DIR } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
	applyMirror,
	classify,
	computeMetrics,
	exportModel,
	importModel,
	LruCache,
	ModelStore,
	saveTrainedModel,
	trainHead,
	catalogBackbone,
	TransferLearningError,
	UNKNOWN_LABEL,
	type TrainingResult,
} from '../engine';
import { seededRandom } from '../engine/head/random';

/** Gaussian blobs: a real learning problem with a known answer, small enough for unit tests. */
function blobs(perClass: number, classes: string[], dims = 8, seed = 1) {
	const random = seededRandom(seed);
	const gaussian = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
	const features: Float32Array[] = [];
	const labels: string[] = [];
	classes.forEach((label, c) => {
		for (let i = 0; i < perClass; i++) {
			features.push(Float32Array.from({ length: dims }, (_, d) => (d === c ? 3 : 0) + gaussian() * 0.7));
			labels.push(label);
		}
	});
	return { features, labels };
}

test('metrics: accuracy, per-class precision/recall/F1, macro-F1 and confusion matrix', () => {
	// actual: a a a b b c ; predicted: a a b b c c
	const m = computeMetrics(['a', 'b', 'c'], [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]);
	assert.equal(m.accuracy, 4 / 6);
	assert.deepEqual(m.confusionMatrix, [[2, 1, 0], [0, 1, 1], [0, 0, 1]]);
	const [a, b, c] = m.perClass;
	assert.deepEqual([a.precision, a.recall, a.support], [1, 2 / 3, 3]);
	assert.deepEqual([b.precision, b.recall], [0.5, 0.5]);
	assert.deepEqual([c.precision, c.recall], [0.5, 1]);
	assert.ok(Math.abs(m.macroF1 - (0.8 + 0.5 + 2 / 3) / 3) < 1e-12);
});

test('LRU cache evicts the least recently used entry and releases it', () => {
	const evicted: number[] = [];
	const cache = new LruCache<string, number>(2, (v) => evicted.push(v));
	cache.set('a', 1);
	cache.set('b', 2);
	cache.get('a');
	cache.set('c', 3);
	assert.deepEqual(evicted, [2]);
	assert.equal(cache.get('a'), 1);
	assert.equal(cache.get('b'), undefined);
});

test('the mirror replaces the public host only, as a folder or as a base URL', () => {
	const url = catalogBackbone('mobilenet_v1_0.25_224').url;
	assert.equal(applyMirror(url, '/srv/mirror'), '/srv/mirror/tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json');
	assert.equal(applyMirror(url, 'http://127.0.0.1:9/m'), 'http://127.0.0.1:9/m/tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json');
	assert.equal(applyMirror('https://example.com/model.json', '/srv/mirror'), 'https://example.com/model.json');
	assert.equal(applyMirror(url, ''), url);
});

test('head training learns separable classes, reproducibly for a seed', async () => {
	const { features, labels } = blobs(30, ['cat', 'dog', 'fox']);
	const first = await trainHead(features, labels, { seed: 7, learningRate: 0.01 });
	const again = await trainHead(features, labels, { seed: 7, learningRate: 0.01 });
	assert.deepEqual(first.head.labels, ['cat', 'dog', 'fox']);
	assert.ok(first.metrics.accuracy >= 0.9, `validation accuracy ${first.metrics.accuracy}`);
	assert.equal(first.evaluatedOn, 'validation');
	assert.equal(first.validationCount, 18);
	assert.deepEqual(first.examplesPerClass, { cat: 30, dog: 30, fox: 30 });
	assert.deepEqual(Array.from(first.head.layers[0].kernel), Array.from(again.head.layers[0].kernel));
	assert.ok(first.history.length >= 1 && first.history.every((h) => Number.isFinite(h.loss) && h.validationLoss !== undefined));
	const predictions = classify(first.head, features.slice(0, 3), { topK: 2 });
	assert.equal(predictions[0].scores.length, 2);
	assert.ok(predictions[0].scores[0].score >= predictions[0].scores[1].score);
});

test('a hidden layer and no validation split also train', async () => {
	const { features, labels } = blobs(20, ['x', 'y']);
	const result = await trainHead(features, labels, { hiddenUnits: 16, validationSplit: 0, epochs: 60, learningRate: 0.01 });
	assert.equal(result.head.layers.length, 2);
	assert.equal(result.evaluatedOn, 'training');
	assert.equal(result.history.length, 60);
	assert.ok(result.metrics.accuracy > 0.9, `training accuracy ${result.metrics.accuracy}`);
});

test('training refuses one class, too few examples, and mismatched feature lengths with advice', async () => {
	const { features } = blobs(3, ['a']);
	await assert.rejects(trainHead(features, ['a', 'a', 'a']), /at least 2 classes.*"a"/);
	await assert.rejects(trainHead(features, ['a', 'a', 'b']), (e: Error & { hint?: string }) => /at least 2 examples.*"b"/.test(e.message) && !!e.hint);
	await assert.rejects(trainHead([features[0], new Float32Array(3), features[2]], ['a', 'b', 'b']), /Example 1 has 3 features/);
	await assert.rejects(trainHead(features, ['a', 'b', 'b'], { epochs: 0 }), /epochs/);
});

test('the confidence threshold turns a weak best guess into unknown', async () => {
	const { features, labels } = blobs(20, ['a', 'b']);
	const { head } = await trainHead(features, labels);
	const ambiguous = new Float32Array(8).fill(1.5);
	const [p] = classify(head, [ambiguous], { threshold: 0.999 });
	assert.equal(p.label, UNKNOWN_LABEL);
	assert.ok(p.confidence < 0.999);
	assert.throws(() => classify(head, [new Float32Array(5)]), /5 values but the model expects 8/);
});

async function trained(): Promise<TrainingResult> {
	const { features, labels } = blobs(10, ['a', 'b']);
	return trainHead(features, labels, { epochs: 5 });
}

const spec = catalogBackbone('mobilenet_v1_0.25_224');
const prep = { resizeMode: 'centreCrop' as const, l2Normalize: false };

test('the store counts versions up, serves latest, and keeps a version byte-exact', async () => {
	const store = new ModelStore(path.join(TEMP_DIR, 'store-versions'));
	const result = await trained();
	const v1 = await saveTrainedModel(store, 'parcels', result, spec, prep);
	const v2 = await saveTrainedModel(store, 'parcels', result, spec, prep);
	assert.equal(v1.manifest.version, 1);
	assert.equal(v2.manifest.version, 2);
	assert.equal((await store.load('parcels')).manifest.version, 2);
	const one = await store.load('parcels', 1);
	assert.deepEqual(Array.from(one.head.layers[0].kernel), Array.from(result.head.layers[0].kernel));
	assert.deepEqual(one.manifest.labels, ['a', 'b']);
	assert.equal(one.manifest.backbone.id, 'mobilenet_v1_0.25_224');
	assert.ok(one.manifest.packageVersion && one.manifest.createdAt && one.manifest.metrics.confusionMatrix);
	assert.deepEqual(await store.list(), [{ name: 'parcels', versions: [1, 2], latestVersion: 2 }]);
	await assert.rejects(store.load('parcels', 9), /no version 9.*/);
	// The other models are named for the log only: the message and hint reach webhook callers.
	await assert.rejects(store.load('nothing'), (e: TransferLearningError) => /no model named "nothing"/.test(e.message) && !/parcels/.test(`${e.message} ${e.hint}`) && /parcels/.test(e.logDetail ?? ''));
});

test('concurrent saves get distinct versions and leave no temporary folders', async () => {
	const store = new ModelStore(path.join(TEMP_DIR, 'store-race'));
	const result = await trained();
	const saved = await Promise.all(Array.from({ length: 6 }, () => saveTrainedModel(store, 'race', result, spec, prep)));
	assert.deepEqual(saved.map((s) => s.manifest.version).sort(), [1, 2, 3, 4, 5, 6]);
	assert.deepEqual((await fs.readdir(path.join(store.root, 'race'))).sort(), ['1', '2', '3', '4', '5', '6']);
});

test('names that could leave the store are refused, and the store is untouched', async () => {
	// "../../x" would land in `outside`, ".." in `outside/a`: nothing may appear beside the store.
	const outside = path.join(TEMP_DIR, 'store-names');
	await fs.mkdir(path.join(outside, 'a'), { recursive: true });
	const store = new ModelStore(path.join(outside, 'a', 'store'));
	const result = await trained();
	for (const name of ['../../x', '..', '.hidden', 'a/b', 'a\\b', '', 'x'.repeat(101)]) {
		await assert.rejects(saveTrainedModel(store, name, result, spec, prep), /not a valid model name/);
		await assert.rejects(store.load(name), /not a valid model name/);
	}
	assert.deepEqual(await fs.readdir(outside), ['a']);
	assert.deepEqual((await fs.readdir(path.join(outside, 'a'))).filter((e) => e !== 'store'), []);
});

test('a crash mid-save leaves the previous version served; a damaged version is refused', async () => {
	const store = new ModelStore(path.join(TEMP_DIR, 'store-crash'));
	const result = await trained();
	await saveTrainedModel(store, 'm', result, spec, prep);
	// What a process killed mid-save leaves: a temporary folder with half its files.
	await fs.mkdir(path.join(store.root, 'm', '.incoming-123-abc'));
	await fs.writeFile(path.join(store.root, 'm', '.incoming-123-abc', 'head.bin'), Buffer.alloc(10));
	assert.equal((await store.load('m')).manifest.version, 1);
	const v2 = await saveTrainedModel(store, 'm', result, spec, prep);
	assert.equal(v2.manifest.version, 2);
	// A version whose weights were cut short on disk must never classify.
	const damaged = path.join(store.root, 'm', '3');
	await fs.cp(path.join(store.root, 'm', '2'), damaged, { recursive: true });
	await fs.truncate(path.join(damaged, 'head.bin'), 12);
	await assert.rejects(new ModelStore(store.root).load('m', 3), /damaged/);
});

test('a model travels as one file and comes back identical', async () => {
	const result = await trained();
	const store = new ModelStore(path.join(TEMP_DIR, 'store-export'));
	const model = await saveTrainedModel(store, 'travel', result, spec, prep);
	const file = exportModel(model);
	const back = importModel(file);
	assert.deepEqual(back.manifest, model.manifest);
	assert.deepEqual(Array.from(back.head.mean), Array.from(model.head.mean));
	assert.throws(() => importModel(Buffer.from('not a model')), /not an exported transfer-learning model/);
	assert.throws(() => importModel(file.subarray(0, file.length - 8)), /damaged/);
});

test('dataset folders are where the tests expect them', async () => {
	assert.ok((await fs.readdir(DATASETS_DIR)).includes('flowers5'));
});
