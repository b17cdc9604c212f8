/**
 * A real n8n under load while it retrains: the classify webhook must keep answering quickly, and a
 * retrain killed with SIGKILL must leave every earlier version intact and served after a restart.
 * Run by `npm run test:e2e`.
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
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

const FLOWERS = path.join(DATASETS_DIR, 'flowers5');
const flowers = readDataset(FLOWERS);
const trainSet = flowers.filter((e) => e.split === 'train');
const testSet = flowers.filter((e) => e.split === 'test');

const userFolder = path.join(TEMP_DIR, 'n8n');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
const modelsDir = path.join(userFolder, '.n8n', 'transfer-learning', 'models', 'flowers');
/** A head with a wide hidden layer and no early stopping: tens of seconds of training on two cores. */
const LONG_TRAINING = { hiddenUnits: 1024, epochs: 100, patience: 100 };
let n8n: RunningN8n;
let options: StartOptions;
/** n8n's log lines since the last start, for the training progress Fine-Tune Head reports. */
let logLines: string[] = [];

const classifyRequest = (file: string) =>
	axios.post(`${n8n.url}webhook/classify`, readFileSync(file), { headers: { 'content-type': 'image/jpeg' }, validateStatus: () => true, timeout: 120_000 });

async function versions(): Promise<number[]> {
	return (await fs.readdir(modelsDir).catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).map(Number).sort((a, b) => a - b);
}

async function start(): Promise<void> {
	logLines = [];
	n8n = await startN8n({ ...options, log: (line) => logLines.push(line) });
	await n8n.signIn();
}

/** Sets the Train workflow's training options. */
async function setTraining(training: Record<string, number>): Promise<void> {
	const { data } = await n8n.api.get(`workflows/${EXAMPLE_IDS.train}`);
	const workflow = data.data;
	workflow.nodes.find((n: { type: string }) => n.type === 'n8n-nodes-transfer-learning.fineTuneHead').parameters.training = training;
	const saved = await n8n.api.patch(`workflows/${EXAMPLE_IDS.train}`, { nodes: workflow.nodes, versionId: workflow.versionId });
	assert.equal(saved.status, 200, JSON.stringify(saved.data));
}

const runTrain = () => n8n.runWorkflow(EXAMPLE_IDS.train);
const finished = (id: string) => n8n.finished(id, 600);

/** Waits until Fine-Tune Head logs the training progress of a run started after `since` lines. */
const trainingStarted = (since: number) =>
	waitFor('Fine-Tune Head to log its first epoch', async () => (logLines.slice(since).some((l) => /Fine-Tune Head "flowers": epoch \d+\//.test(l)) ? true : undefined), 300);

interface Load {
	oneAtATime: number[];
	concurrent: number[];
	concurrentSeconds: number;
}

/** 20 requests one at a time, then 100 at once; every answer must be HTTP 200 with a label. */
async function measure(): Promise<Load> {
	const oneAtATime: number[] = [];
	for (let i = 0; i < 20; i++) {
		const started = performance.now();
		const response = await classifyRequest(testSet[i].file);
		oneAtATime.push(performance.now() - started);
		assert.equal(response.status, 200, JSON.stringify(response.data));
		assert.ok(response.data.label, JSON.stringify(response.data));
	}
	const started = performance.now();
	const concurrent = await Promise.all(
		Array.from({ length: 100 }, async (_, i) => {
			const begun = performance.now();
			const response = await classifyRequest(testSet[i % testSet.length].file);
			assert.equal(response.status, 200, `request ${i}: ${JSON.stringify(response.data)}`);
			return performance.now() - begun;
		}),
	);
	return { oneAtATime, concurrent, concurrentSeconds: (performance.now() - started) / 1000 };
}

const figures = (ms: number[]) => `p50 ${percentile(ms, 50).toFixed(0)} ms, p95 ${percentile(ms, 95).toFixed(0)} ms, max ${Math.max(...ms).toFixed(0)} ms`;

function report(what: string, load: Load): void {
	console.log(`# ${what}, one at a time (20): ${figures(load.oneAtATime)}`);
	console.log(`# ${what}, 100 at once: all in ${load.concurrentSeconds.toFixed(1)} s; ${figures(load.concurrent)}`);
}

/** Every file of every version folder, hashed. */
async function snapshot(): Promise<Record<string, string>> {
	const hashes: Record<string, string> = {};
	for (const v of await versions()) {
		for (const file of await fs.readdir(path.join(modelsDir, String(v)))) {
			hashes[`${v}/${file}`] = createHash('sha256').update(await fs.readFile(path.join(modelsDir, String(v), file))).digest('hex');
		}
	}
	return hashes;
}

/** A test that shows n8n's last words when it fails: they explain a crash or a stuck execution. */
function n8nTest(name: string, body: () => Promise<void>): void {
	test(name, async () => {
		try {
			await body();
		} catch (error) {
			for (const line of logLines.slice(-40)) console.log(`# n8n: ${line}`);
			throw error;
		}
	});
}

before(async () => {
	await copyIntoClassFolders(trainingFolder, trainSet);
	options = await setUpExampleN8n(userFolder, trainingFolder, { env: { TL_MODEL_MIRROR: MIRROR_DIR, TL_MODEL_STORE: '', TL_MODEL_CACHE: '' } });
	await start();
});

after(async () => {
	await n8n?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

n8nTest('the classify webhook answers quickly while a retrain runs', async () => {
	assert.equal(await finished(await runTrain()), 'success');
	assert.deepEqual(await versions(), [1]);
	// Warm: the backbone and the model are loaded by the first requests.
	for (let i = 0; i < 3; i++) assert.equal((await classifyRequest(testSet[i].file)).status, 200);
	report('no retrain running', await measure());

	await setTraining(LONG_TRAINING);
	const since = logLines.length;
	const retrainStarted = performance.now();
	const execution = await runTrain();
	await trainingStarted(since);
	const load = await measure();
	const stillTraining = (await n8n.executionStatus(execution)) === 'running';
	report('while the head trains', load);
	assert.ok(stillTraining, 'the retrain ended before the measurement did: lengthen LONG_TRAINING');
	assert.ok(Math.max(...load.oneAtATime) < 1000, `one-at-a-time requests took up to ${Math.max(...load.oneAtATime).toFixed(0)} ms during training`);
	assert.equal(await finished(execution), 'success');
	console.log(`# the retrain took ${((performance.now() - retrainStarted) / 1000).toFixed(1)} s`);
	assert.deepEqual(await versions(), [1, 2]);
	assert.ok(logLines.some((l) => /Fine-Tune Head "flowers": epoch \d+\/\d+ on every example/.test(l)), 'the final phase logged its progress');
});

n8nTest('n8n killed mid-retrain restarts serving the latest complete version, earlier versions intact', async () => {
	const probe = testSet[1].file;
	const before = await classifyRequest(probe);
	assert.equal(before.status, 200);
	assert.equal(before.data.version, 2);
	const saved = await snapshot();

	const since = logLines.length;
	await runTrain();
	await trainingStarted(since);
	const pid = n8n.pid;
	process.kill(-pid, 'SIGKILL');
	await waitFor('n8n to die', async () => {
		try {
			process.kill(pid, 0);
			return undefined;
		} catch {
			return true;
		}
	}, 30);

	assert.deepEqual(await versions(), [1, 2], 'no version from the killed retrain');
	assert.deepEqual(await snapshot(), saved, 'versions 1 and 2 are byte for byte as before');
	await start();
	const after = await classifyRequest(probe);
	assert.equal(after.status, 200, JSON.stringify(after.data));
	assert.equal(after.data.version, 2);
	assert.equal(after.data.label, before.data.label);
	assert.equal(after.data.confidence, before.data.confidence);
});
