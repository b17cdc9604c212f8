/**
 * Classify-webhook throughput of one n8n process against n8n in queue mode with one and two
 * workers, each with n8n's default execution saving and with successful executions not saved.
 *   npm run bench:queue [-- --requests 150 --clients 8]
 * Everything runs on this machine: PostgreSQL, Redis, every n8n process and the load generator
 * share its cores, so a second worker gains only what the cores left idle by the first allow.
 */
import { MIRROR_DIR, DATASETS_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import * as assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import axios from 'axios';
import { copyIntoClassFolders } from '../../scripts/dataset';
import {
	EXAMPLE_IDS,
	freePort,
	importWorkflows,
	installPackage,
	publishWorkflows,
	startN8n,
	type RunningN8n,
	type StartOptions,
} from '../../scripts/n8n-instance';
import { percentile } from '../../scripts/percentile';
import { Cluster, trainAndClassifyExamples } from './cluster';

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '150' }, clients: { type: 'string', default: '8' } } });
const REQUESTS = Number(args.requests);
const CLIENTS = Number(args.clients);

/** What n8n's docs advise for high-volume webhooks: successful executions are not kept. */
const SAVE_NONE = { EXECUTIONS_DATA_SAVE_ON_SUCCESS: 'none', EXECUTIONS_DATA_SAVE_ON_PROGRESS: 'false', EXECUTIONS_DATA_SAVE_MANUAL_EXECUTIONS: 'false' };

const flowers = readDataset(path.join(DATASETS_DIR, 'flowers5'));
const images = flowers.filter((e) => e.split === 'test').map((e) => readFileSync(e.file));
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');

interface Row {
	setup: string;
	saving: string;
	requestsPerSecond: number;
	p50: number;
	p95: number;
}

/** `CLIENTS` clients, each sending its next request as soon as its last is answered, `REQUESTS` in all. */
async function measure(url: string): Promise<Omit<Row, 'setup' | 'saving'>> {
	const send = async (i: number) => {
		const started = performance.now();
		const response = await axios.post(`${url}webhook/classify`, images[i % images.length], { headers: { 'content-type': 'image/jpeg' }, validateStatus: () => true, timeout: 120_000 });
		assert.equal(response.status, 200, JSON.stringify(response.data));
		assert.ok(response.data.label, JSON.stringify(response.data));
		return performance.now() - started;
	};
	// Warm: every process has its backbone and model loaded before the clock starts.
	for (let i = 0; i < 2 * CLIENTS; i++) await Promise.all(Array.from({ length: 2 }, (_, j) => send(2 * i + j)));
	const latencies: number[] = [];
	let next = 0;
	const started = performance.now();
	await Promise.all(Array.from({ length: CLIENTS }, async () => {
		while (next < REQUESTS) latencies.push(await send(next++));
	}));
	const seconds = (performance.now() - started) / 1000;
	return { requestsPerSecond: REQUESTS / seconds, p50: percentile(latencies, 50), p95: percentile(latencies, 95) };
}

async function train(n8n: RunningN8n): Promise<void> {
	assert.equal(await n8n.finished(await n8n.runWorkflow(EXAMPLE_IDS.train), 600), 'success');
}

async function singleProcess(rows: Row[]): Promise<void> {
	const options: StartOptions = {
		userFolder: path.join(TEMP_DIR, 'single'),
		port: await freePort(),
		brokerPort: await freePort(),
		readableFolders: [path.dirname(trainingFolder)],
		env: { TL_MODEL_STORE: '', TL_MODEL_CACHE: '', TL_MODEL_MIRROR: MIRROR_DIR },
	};
	await installPackage(options.userFolder);
	await importWorkflows(options, await trainAndClassifyExamples(path.join(TEMP_DIR, 'single-examples'), trainingFolder));
	await publishWorkflows(options, [EXAMPLE_IDS.classify]);
	let n8n = await startN8n(options);
	try {
		await n8n.signIn();
		await train(n8n);
		rows.push({ setup: 'one n8n process (SQLite)', saving: 'default', ...(await measure(n8n.url)) });
		await n8n.stop();
		n8n = await startN8n({ ...options, env: { ...options.env, ...SAVE_NONE } });
		rows.push({ setup: 'one n8n process (SQLite)', saving: 'success not saved', ...(await measure(n8n.url)) });
	} finally {
		await n8n.stop();
	}
}

async function queueMode(rows: Row[]): Promise<void> {
	// n8n's default worker concurrency (10): the setting a deployment starts from.
	const cluster = await Cluster.start({ dir: path.join(TEMP_DIR, 'cluster'), trainingFolder, mirror: MIRROR_DIR, workers: 2, concurrency: 10 });
	try {
		await train(cluster.main);
		for (const [saving, env] of [['default', {}], ['success not saved', SAVE_NONE]] as const) {
			if (saving !== 'default') await cluster.restart(env);
			rows.push({ setup: 'queue mode, 2 workers', saving, ...(await measure(cluster.main.url)) });
			await cluster.workers[1].stop();
			rows.push({ setup: 'queue mode, 1 worker', saving, ...(await measure(cluster.main.url)) });
		}
	} finally {
		await cluster.stop();
	}
}

async function main(): Promise<void> {
	await copyIntoClassFolders(trainingFolder, flowers.filter((e) => e.split === 'train'));
	const rows: Row[] = [];
	try {
		await singleProcess(rows);
		await queueMode(rows);
	} finally {
		await fs.rm(TEMP_DIR, { recursive: true, force: true });
	}
	console.log(`\nClassify webhook, ${REQUESTS} requests from ${CLIENTS} clients at once, ${os.availableParallelism()} cores, everything on this machine:\n`);
	console.log('| setup | successful executions | requests/s | p50 | p95 |');
	console.log('|---|---|---:|---:|---:|');
	for (const r of rows) console.log(`| ${r.setup} | ${r.saving} | ${r.requestsPerSecond.toFixed(1)} | ${r.p50.toFixed(0)} ms | ${r.p95.toFixed(0)} ms |`);
	console.log(JSON.stringify(rows));
}

main().catch((error) => {
	console.error(error);
	process.exitCode = 1;
});
