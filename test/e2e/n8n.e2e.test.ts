/**
 * End to end, in a real n8n: the package installed as n8n's installer does it, the example
 * workflows imported and published, a webhook answering with labels. Run by `npm run test:e2e`.
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import axios from 'axios';
import { copyIntoClassFolders } from '../../scripts/dataset';
import { percentile } from '../../scripts/percentile';
import {
	EXAMPLE_IDS,
	startN8n,
	type RunningN8n,
	type StartOptions,
	waitFor,
} from '../../scripts/n8n-instance';
import { setUpExampleN8n } from '../helpers/example-n8n';
import { serveFolder, type StaticServer } from '../helpers/server';

const FLOWERS = path.join(DATASETS_DIR, 'flowers5');
const flowers = readDataset(FLOWERS);
const trainSet = flowers.filter((e) => e.split === 'train');
const testSet = flowers.filter((e) => e.split === 'test');
const ids = EXAMPLE_IDS;

const userFolder = path.join(TEMP_DIR, 'n8n');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
const modelsDir = path.join(userFolder, '.n8n', 'transfer-learning', 'models', 'flowers');
let n8n: RunningN8n;
let options: StartOptions;
let imageServer: StaticServer;

const post = (webhook: string, body: unknown, headers: Record<string, string> = {}) =>
	axios.post(`${n8n.url}webhook/${webhook}`, body, { headers, validateStatus: () => true, timeout: 60_000 });


async function versions(): Promise<number[]> {
	return (await fs.readdir(modelsDir).catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).map(Number).sort((a, b) => a - b);
}


before(async () => {
	await copyIntoClassFolders(trainingFolder, trainSet);
	options = await setUpExampleN8n(userFolder, trainingFolder, {
		// The store and cache go to their defaults under the n8n user folder, as for a user.
		// The image server of the classify-by-URL request is on loopback, which image URLs may not reach unless allowed.
		env: { TL_MODEL_MIRROR: MIRROR_DIR, TL_MODEL_STORE: '', TL_MODEL_CACHE: '', N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.1/32' },
	});
	const started = Date.now();
	n8n = await startN8n(options);
	console.log(`# n8n ready in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${n8n.pid})`);
	await n8n.signIn();
	imageServer = await serveFolder(FLOWERS);
});

after(async () => {
	await imageServer?.close();
	if (n8n) {
		const pid = n8n.pid;
		await n8n.stop();
		assert.throws(() => process.kill(pid, 0), 'n8n is gone');
	}
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
	assert.ok(!existsSync(userFolder));
});

test('the Train workflow trains a model on the flowers5 train split', async () => {
	const startedAt = Date.now();
	assert.equal(await n8n.finished(await n8n.runWorkflow(ids.train), 300), 'success');
	assert.deepEqual(await versions(), [1]);
	const manifest = JSON.parse(readFileSync(path.join(modelsDir, '1', 'manifest.json'), 'utf8'));
	assert.deepEqual(manifest.labels, ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']);
	assert.equal(manifest.trainCount + manifest.validationCount, trainSet.length);
	console.log(`# Train workflow: ${trainSet.length} images in ${((Date.now() - startedAt) / 1000).toFixed(1)} s, validation accuracy ${manifest.metrics.accuracy.toFixed(3)}`);
});

test('the classify webhook labels every flowers5 test image, raw and multipart', async () => {
	for (const mode of ['raw', 'multipart'] as const) {
		const latencies: number[] = [];
		let correct = 0;
		for (const image of testSet) {
			const bytes = readFileSync(image.file);
			const startedAt = performance.now();
			let response;
			if (mode === 'raw') {
				response = await post('classify', bytes, { 'content-type': 'image/jpeg' });
			} else {
				const form = new FormData();
				form.append('file', new Blob([bytes], { type: 'image/jpeg' }), path.basename(image.file));
				response = await post('classify', form);
			}
			latencies.push(performance.now() - startedAt);
			assert.equal(response.status, 200, `${image.file}: ${JSON.stringify(response.data)}`);
			const { label, confidence, scores, model, version } = response.data;
			assert.equal(model, 'flowers');
			assert.equal(version, 1);
			assert.ok(confidence > 0 && confidence <= 1 && scores.length === 3 && scores[0].label === label);
			if (label === image.label) correct++;
		}
		const accuracy = correct / testSet.length;
		console.log(`# ${mode}: accuracy ${accuracy.toFixed(3)} on ${testSet.length} test images, webhook latency p50 ${percentile(latencies, 50).toFixed(0)} ms, p95 ${percentile(latencies, 95).toFixed(0)} ms`);
		assert.ok(accuracy >= 0.75, `${mode} accuracy ${accuracy}`);
	}
	// And a JSON body naming an image URL.
	const byUrl = await post('classify', { imageUrl: imageServer.url + path.relative(FLOWERS, testSet[0].file) });
	assert.equal(byUrl.status, 200, JSON.stringify(byUrl.data));
	assert.equal(byUrl.data.model, 'flowers');
});

test('bad requests get a clear error and n8n keeps serving', async () => {
	const good = readFileSync(testSet[0].file);
	const cases: [string, () => Promise<{ status: number; data: { error?: string } }>, RegExp][] = [
		['an empty body', () => post('classify', undefined), /image is empty/],
		['JSON without an image URL', () => post('classify', { hello: 'world' }), /not an image/],
		['a text file', () => post('classify', Buffer.from('this is not an image'), { 'content-type': 'text/plain' }), /not an image/],
		['a text file in a form', () => {
			const form = new FormData();
			form.append('file', new Blob(['just text'], { type: 'text/plain' }), 'notes.txt');
			return post('classify', form);
		}, /not an image/],
		['a truncated JPEG', () => post('classify', good.subarray(0, good.length / 3), { 'content-type': 'image/jpeg' }), /truncated/],
		['an unknown model', () => post('classify?model=nope', good, { 'content-type': 'image/jpeg' }), /no model named "nope"/],
		['a model name that escapes the store', () => post('classify?model=..%2F..%2Fx', good, { 'content-type': 'image/jpeg' }), /not a valid model name/],
	];
	for (const [what, send, expected] of cases) {
		const response = await send();
		assert.equal(response.status, 400, `${what}: HTTP ${response.status} ${JSON.stringify(response.data)}`);
		assert.match(response.data.error ?? '', expected, what);
		const next = await post('classify', good, { 'content-type': 'image/jpeg' });
		assert.equal(next.status, 200, `after ${what}`);
	}
});

test('route by class sends each image down the branch of its class', async () => {
	const sample = testSet.filter((_, i) => i % 6 === 0);
	let matched = 0;
	for (const image of sample) {
		const response = await post('route-by-class', readFileSync(image.file), { 'content-type': 'image/jpeg' });
		assert.equal(response.status, 200, JSON.stringify(response.data));
		const { route, label, confidence } = response.data;
		// The threshold in the example is 0.5: below it the image takes the `unknown` branch.
		assert.equal(route, confidence >= 0.5 ? label : 'unknown');
		if (route === image.label) matched++;
	}
	assert.ok(matched >= sample.length * 0.6, `${matched}/${sample.length} routed to their true class`);
});

test('the retrain workflow on a schedule adds a version that the webhook uses without a restart', async () => {
	// New labelled examples arrive: a few test photos join the training folder.
	await copyIntoClassFolders(trainingFolder, testSet.filter((_, i) => i % 10 === 0));
	const { data } = await n8n.api.get(`workflows/${ids.retrain}`);
	const workflow = data.data;
	const schedule = workflow.nodes.find((n: { type: string }) => n.type === 'n8n-nodes-base.scheduleTrigger');
	schedule.parameters.rule = { interval: [{ field: 'seconds', secondsInterval: 5 }] };
	const saved = await n8n.api.patch(`workflows/${ids.retrain}`, { nodes: workflow.nodes, versionId: workflow.versionId });
	assert.equal(saved.status, 200, JSON.stringify(saved.data));
	const activated = await n8n.api.post(`workflows/${ids.retrain}/activate`, { versionId: saved.data.data.versionId });
	assert.equal(activated.status, 200, JSON.stringify(activated.data));
	try {
		await waitFor('a second model version', async () => ((await versions()).includes(2) ? true : undefined), 120);
	} finally {
		await n8n.api.post(`workflows/${ids.retrain}/deactivate`, {});
	}
	const manifest = JSON.parse(readFileSync(path.join(modelsDir, '2', 'manifest.json'), 'utf8'));
	assert.equal(manifest.trainCount + manifest.validationCount, trainSet.length + 12);
	const response = await post('classify', readFileSync(testSet[1].file), { 'content-type': 'image/jpeg' });
	assert.equal(response.status, 200);
	assert.ok(response.data.version >= 2, `version ${response.data.version}`);
});
