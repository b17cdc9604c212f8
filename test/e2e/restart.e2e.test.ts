/**
 * A model trained, then n8n restarted: the classify webhook must answer from its very first request
 * on, however the new process first touches TF.js, and n8n's log must show no listener pile-up.
 * Run by `npm run test:e2e`.
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import axios from 'axios';
import { copyIntoClassFolders } from '../../scripts/dataset';
import {
	EXAMPLE_IDS,
	startN8n,
	type RunningN8n,
	type StartOptions,
} from '../../scripts/n8n-instance';
import { setUpExampleN8n } from '../helpers/example-n8n';

const FLOWERS = path.join(DATASETS_DIR, 'flowers5');
const flowers = readDataset(FLOWERS);
const trainSet = flowers.filter((e) => e.split === 'train');
const testSet = flowers.filter((e) => e.split === 'test');

const userFolder = path.join(TEMP_DIR, 'n8n');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
let options: StartOptions;
let n8n: RunningN8n | undefined;
/** Everything each n8n printed, start to stop. */
const log: string[] = [];

const classify = (image: Buffer) =>
	axios.post(`${n8n!.url}webhook/classify`, image, { headers: { 'content-type': 'image/jpeg' }, validateStatus: () => true, timeout: 60_000 });

before(async () => {
	await copyIntoClassFolders(trainingFolder, trainSet);
	options = await setUpExampleN8n(userFolder, trainingFolder, {
		env: { TL_MODEL_MIRROR: MIRROR_DIR, TL_MODEL_STORE: '', TL_MODEL_CACHE: '' },
		log: (line) => log.push(line),
	});
	n8n = await startN8n(options);
	await n8n.signIn();
});

after(async () => {
	await n8n?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

test('after a restart the first classify request answers as before the restart, and 50 more follow without an error', async () => {
	assert.equal(await n8n!.finished(await n8n!.runWorkflow(EXAMPLE_IDS.train), 300), 'success');

	// Before the restart: the answers to the test photos, the process having trained already.
	const probe = testSet.slice(0, 10).map((e) => ({ ...e, bytes: readFileSync(e.file) }));
	const beforeRestart: { label: string; confidence: number }[] = [];
	for (const image of probe) {
		const response = await classify(image.bytes);
		assert.equal(response.status, 200, JSON.stringify(response.data));
		beforeRestart.push(response.data);
	}
	const known = probe.findIndex((image, i) => beforeRestart[i].label === image.label);
	assert.ok(known >= 0, 'the model names at least one of ten test photos');

	await n8n!.stop();
	const linesBefore = log.length;
	n8n = await startN8n(options);
	console.log(`# n8n restarted (pid ${n8n.pid})`);

	const first = await classify(probe[known].bytes);
	assert.equal(first.status, 200, `first request after the restart: ${JSON.stringify(first.data)}`);
	assert.equal(first.data.label, probe[known].label);
	assert.equal(first.data.version, 1);
	assert.ok(Math.abs(first.data.confidence - beforeRestart[known].confidence) < 1e-4, `confidence ${first.data.confidence} vs ${beforeRestart[known].confidence}`);
	for (let i = 0; i < 50; i++) {
		const image = probe[i % probe.length];
		const response = await classify(image.bytes);
		assert.equal(response.status, 200, `request ${i + 2} after the restart: ${JSON.stringify(response.data)}`);
		assert.equal(response.data.label, beforeRestart[i % probe.length].label, `request ${i + 2}`);
	}
	const afterRestart = log.slice(linesBefore).join('\n');
	assert.ok(afterRestart.length > 0, "n8n's output was captured");
	assert.doesNotMatch(log.join('\n'), /MaxListenersExceededWarning|has not yet been initialized/);
});
