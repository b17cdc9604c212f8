/**
 * n8n 2.41.1 in queue mode with PostgreSQL, Redis, a main process and two workers: models trained
 * on one worker are served by every worker, at once, and survive a worker killed mid-job. Run by
 * `npm run test:queue` (scripts/test.sh installs PostgreSQL and Redis when missing).
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import axios from 'axios';
import { Client } from 'pg';
import { copyIntoClassFolders } from '../../scripts/dataset';
import { waitFor } from '../../scripts/n8n-instance';
import { Cluster, EXAMPLE_IDS } from './cluster';

const flowers = readDataset(path.join(DATASETS_DIR, 'flowers5'));
const trainSet = flowers.filter((e) => e.split === 'train');
const testSet = flowers.filter((e) => e.split === 'test');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
/** Tens of seconds of training: long enough to kill a worker in the middle of it. */
const LONG_TRAINING = { hiddenUnits: 1024, epochs: 100, patience: 100 };

let cluster: Cluster;

const classify = (i: number) =>
	axios.post(`${cluster.main.url}webhook/classify`, readFileSync(testSet[i % testSet.length].file), { headers: { 'content-type': 'image/jpeg' }, validateStatus: () => true, timeout: 120_000 });

async function setTraining(training: Record<string, number>): Promise<void> {
	const { data } = await cluster.main.api.get(`workflows/${EXAMPLE_IDS.train}`);
	const workflow = data.data;
	workflow.nodes.find((n: { type: string }) => n.type === 'n8n-nodes-transfer-learning.fineTuneHead').parameters.training = training;
	const saved = await cluster.main.api.patch(`workflows/${EXAMPLE_IDS.train}`, { nodes: workflow.nodes, versionId: workflow.versionId });
	assert.equal(saved.status, 200, JSON.stringify(saved.data));
}

const runTrain = () => cluster.main.runWorkflow(EXAMPLE_IDS.train);
const finished = (id: string) => cluster.main.finished(id, 400);

/** Every stored version of `flowers`, hashed, straight from the package's tables. */
async function storedVersions(): Promise<Record<number, string>> {
	const client = new Client({ connectionString: cluster.postgres.url(cluster.database) });
	await client.connect();
	try {
		const { rows } = await client.query<{ version: number; manifest: string; weights: Buffer }>("SELECT version, manifest, weights FROM transfer_learning.model_versions WHERE name = 'flowers' ORDER BY version");
		return Object.fromEntries(rows.map((r) => [r.version, createHash('sha256').update(r.manifest).update(r.weights).digest('hex')]));
	} finally {
		await client.end();
	}
}

/**
 * Sends classify requests, a few at once, until every listed worker has run at least one since
 * now; every answer must come from `version`. Returns how many requests that took.
 */
async function servedByEvery(workers: number[], version: number): Promise<number> {
	const before = cluster.startedPerWorker();
	let sent = 0;
	while (workers.some((w) => cluster.startedPerWorker()[w] === before[w])) {
		assert.ok(sent < 60, `after ${sent} requests, executions per worker went from ${before} to ${cluster.startedPerWorker()}`);
		const answers = await Promise.all([0, 1, 2, 3].map((i) => classify(sent + i)));
		sent += answers.length;
		for (const answer of answers) {
			assert.equal(answer.status, 200, JSON.stringify(answer.data));
			assert.equal(answer.data.version, version, JSON.stringify(answer.data));
			assert.ok(answer.data.label, JSON.stringify(answer.data));
		}
	}
	return sent;
}

/** A test that shows each process's last words when it fails. */
function queueTest(name: string, body: () => Promise<void>): void {
	test(name, async () => {
		try {
			await body();
		} catch (error) {
			cluster?.logs.forEach((log, i) => log.slice(-15).forEach((line) => console.log(`# ${i ? `worker${i}` : 'main'}: ${line}`)));
			throw error;
		}
	});
}

before(async () => {
	await copyIntoClassFolders(trainingFolder, trainSet);
	// Concurrency 1: each worker runs one job at a time, so two jobs at once are on two workers.
	cluster = await Cluster.start({ dir: path.join(TEMP_DIR, 'cluster'), trainingFolder, mirror: MIRROR_DIR, workers: 2, concurrency: 1 });
});

after(async () => {
	await cluster?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

queueTest('a model trained on one worker is served by every worker', async () => {
	const execution = await runTrain();
	assert.equal(await finished(execution), 'success');
	assert.notEqual(cluster.workerOf(execution), -1, 'the training ran on a worker');
	assert.deepEqual(Object.keys(await storedVersions()), ['1']);
	const sent = await servedByEvery([0, 1], 1);
	console.log(`# both workers served version 1 within ${sent} requests`);
});

queueTest('a retrain on one worker is used by the next request on the other', async () => {
	const execution = await runTrain();
	assert.equal(await finished(execution), 'success');
	const trainer = cluster.workerOf(execution);
	assert.notEqual(trainer, -1);
	// The other worker has version 1 in memory from the test before: it must look again.
	await servedByEvery([1 - trainer], 2);
});

queueTest('two retrains at once, on the two workers, give two versions', async () => {
	const executions = await Promise.all([runTrain(), runTrain()]);
	assert.deepEqual(await Promise.all(executions.map(finished)), ['success', 'success']);
	assert.deepEqual(executions.map((e) => cluster.workerOf(e)).sort(), [0, 1]);
	assert.deepEqual(Object.keys(await storedVersions()), ['1', '2', '3', '4']);
	await servedByEvery([0, 1], 4);
});

queueTest('a worker killed with SIGKILL mid-retrain loses no model, and the other keeps serving', async () => {
	await setTraining(LONG_TRAINING);
	const saved = await storedVersions();
	const execution = await runTrain();
	const victim = await waitFor('a worker to take the retrain', async () => {
		const w = cluster.workerOf(execution);
		return w === -1 ? undefined : w;
	}, 60);
	await waitFor('Fine-Tune Head to log an epoch', async () => (cluster.logs[victim + 1].some((l) => /Fine-Tune Head "flowers": epoch \d+\//.test(l)) ? true : undefined), 300);
	const pid = cluster.workers[victim].pid;
	process.kill(-pid, 'SIGKILL');
	await cluster.workers[victim].exited;
	assert.deepEqual(await storedVersions(), saved, 'no version from the killed retrain; versions 1-4 byte for byte as before');
	await servedByEvery([1 - victim], 4);
});
