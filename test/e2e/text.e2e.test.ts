/**
 * Text end to end, in a real n8n: the package installed as n8n's installer does it (the bundled
 * sentence encoder included), example 6 trains `tickets` on BANKING77's train split from its CSV,
 * example 5's webhook answers every test message with its intent, and example 7 routes messages by it.
 */
import { DATA_DIR, TEMP_DIR } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import axios from 'axios';
import { percentile } from '../../scripts/percentile';
import { readTextDataset, writeTrainSplit } from '../../scripts/text-dataset';
import {
	EXAMPLE_IDS,
	EXAMPLES_DIR,
	startN8n,
	ticketsCsv,
	type RunningN8n,
} from '../../scripts/n8n-instance';
import { setUpExampleN8n } from '../helpers/example-n8n';

const BANKING = path.join(DATA_DIR, 'text', 'banking77_10intents', 'banking77_10intents.csv');
const testSet = readTextDataset(BANKING).filter((e) => e.split === 'test');
const userFolder = path.join(TEMP_DIR, 'n8n');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
const manifestFile = path.join(userFolder, '.n8n', 'transfer-learning', 'models', 'tickets', '1', 'manifest.json');
let n8n: RunningN8n;

before(async () => {
	const trainCount = await writeTrainSplit(BANKING, ticketsCsv(trainingFolder));
	assert.equal(trainCount, 1360);
	n8n = await startN8n(await setUpExampleN8n(userFolder, trainingFolder, { env: { TL_MODEL_STORE: '', TL_MODEL_CACHE: '' } }));
	await n8n.signIn();
});

after(async () => {
	await n8n?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

test('example 6 trains "tickets" on the BANKING77 CSV; example 5 answers every test message, accuracy >= 0.90', async () => {
	const startedAt = Date.now();
	assert.equal(await n8n.finished(await n8n.runWorkflow(EXAMPLE_IDS.trainTickets), 600), 'success');
	assert.ok(existsSync(manifestFile));
	const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
	assert.equal(manifest.backbone.inputType, 'text');
	assert.equal(manifest.trainCount + manifest.validationCount, 1360);
	console.log(`# Train tickets workflow: 1360 texts in ${((Date.now() - startedAt) / 1000).toFixed(1)} s, validation accuracy ${manifest.metrics.accuracy.toFixed(3)}`);

	const latencies: number[] = [];
	let correct = 0;
	for (const example of testSet) {
		const started = performance.now();
		const response = await axios.post(`${n8n.url}webhook/classify-ticket`, { text: example.text }, { validateStatus: () => true, timeout: 60_000 });
		latencies.push(performance.now() - started);
		assert.equal(response.status, 200, `${example.text}: ${JSON.stringify(response.data)}`);
		assert.equal(response.data.model, 'tickets');
		if (response.data.intent === example.label) correct++;
	}
	const accuracy = correct / testSet.length;
	console.log(`# ticket webhook: accuracy ${accuracy.toFixed(3)} on ${testSet.length} messages, latency p50 ${percentile(latencies, 50).toFixed(0)} ms, p95 ${percentile(latencies, 95).toFixed(0)} ms`);
	assert.ok(accuracy >= 0.9, `accuracy ${accuracy}`);

	// A message without text gets HTTP 400 naming what to fix, and n8n keeps serving.
	for (const body of [{}, { text: '   ' }, { text: 12 }]) {
		const response = await axios.post(`${n8n.url}webhook/classify-ticket`, body, { validateStatus: () => true });
		assert.equal(response.status, 400, JSON.stringify(response.data));
		assert.match(response.data.error, /^Item 0: The text is (missing|empty|a number)/);
	}
});

test('example 7 sends each message down the branch of its intent, or "unknown" below the 0.5 threshold', async () => {
	assert.ok(existsSync(manifestFile), 'example 6 trained "tickets" first');
	const example = JSON.parse(readFileSync(path.join(EXAMPLES_DIR, '7-route-tickets.json'), 'utf8'));
	const classifyNode = example.nodes.find((n: { type: string }) => n.type === 'n8n-nodes-transfer-learning.classify');
	assert.deepEqual(classifyNode.parameters.classNames.split(', '), JSON.parse(readFileSync(manifestFile, 'utf8')).labels, 'Class Names are the model\'s classes, in its order');
	const threshold = classifyNode.parameters.threshold;
	const sample = testSet.filter((_, i) => i % 4 === 0);
	let matched = 0;
	for (const message of sample) {
		const response = await axios.post(`${n8n.url}webhook/route-ticket`, { text: message.text }, { validateStatus: () => true, timeout: 60_000 });
		assert.equal(response.status, 200, `${message.text}: ${JSON.stringify(response.data)}`);
		const { route, label, confidence } = response.data;
		assert.equal(route, confidence >= threshold ? label : 'unknown', JSON.stringify(response.data));
		if (route === message.label) matched++;
	}
	console.log(`# route-ticket webhook: ${matched}/${sample.length} routed to their intent's branch`);
	assert.ok(matched >= sample.length * 0.8, `${matched}/${sample.length} routed to their intent's branch`);

	const refused = await axios.post(`${n8n.url}webhook/route-ticket`, { text: ' ' }, { validateStatus: () => true });
	assert.equal(refused.status, 400, JSON.stringify(refused.data));
	assert.match(refused.data.error, /^Item 0: The text is empty/);
});
