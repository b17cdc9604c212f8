/**
 * The classify webhook in front of the internet: anyone can POST `{"imageUrl": ...}`. A real n8n
 * with the package installed and a model trained by the Train example gets hostile URLs aimed at
 * an internal "canary" service on this machine; each must get HTTP 400 with a clear message while
 * the canary sees no connection, and n8n must keep serving. Run by `npm run test:e2e`.
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
} from '../../scripts/n8n-instance';
import { setUpExampleN8n } from '../helpers/example-n8n';
import { serveFolder, startCanary, type Canary, type StaticServer } from '../helpers/server';

const FLOWERS = path.join(DATASETS_DIR, 'flowers5');
const flowers = readDataset(FLOWERS);
// A few images a class: the model only has to exist and answer.
const trainSet = [...new Set(flowers.map((e) => e.label))].flatMap((label) => flowers.filter((e) => e.split === 'train' && e.label === label).slice(0, 4));
const good = flowers.find((e) => e.split === 'test')!;

const userFolder = path.join(TEMP_DIR, 'n8n');
const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
/** The one loopback address the administrator allows for image URLs (an internal image host). */
const ALLOWED_HOST = '127.0.0.2';
let n8n: RunningN8n;
let canary: Canary;
let imageHost: StaticServer;

const post = (body: unknown, headers: Record<string, string> = {}) =>
	axios.post(`${n8n.url}webhook/classify`, body, { headers, validateStatus: () => true, timeout: 60_000 });

before(async () => {
	canary = await startCanary();
	imageHost = await serveFolder(
		FLOWERS,
		(urlPath, _req, res) => {
			if (urlPath !== '/to-canary') return false;
			res.writeHead(302, { location: `http://127.0.0.1:${canary.port}/` }).end();
			return true;
		},
		ALLOWED_HOST,
	);
	await copyIntoClassFolders(trainingFolder, trainSet);
	n8n = await startN8n(
		await setUpExampleN8n(userFolder, trainingFolder, {
			env: { TL_MODEL_MIRROR: MIRROR_DIR, TL_MODEL_STORE: '', TL_MODEL_CACHE: '', N8N_SSRF_ALLOWED_IP_RANGES: `${ALLOWED_HOST}/32` },
		}),
	);
	await n8n.signIn();
	assert.equal(await n8n.finished(await n8n.runWorkflow(EXAMPLE_IDS.train), 300), 'success', 'the Train workflow');
});

after(async () => {
	await canary?.close();
	await imageHost?.close();
	await n8n?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

test('hostile image URLs get HTTP 400 and a clear message, the internal service sees nothing, n8n keeps serving', async () => {
	const goodUrl = imageHost.url + path.relative(FLOWERS, good.file);
	assert.equal((await post({ imageUrl: goodUrl })).status, 200, 'an allowed image host answers');
	const c = canary.port;
	const attacks: [string, RegExp][] = [
		[`http://127.0.0.1:${c}/`, /points to 127\.0\.0\.1, which is a private or local address/],
		[`http://[::1]:${c}/`, /points to \[::1\], which is a private or local address/],
		[`http://2130706433:${c}/`, /points to 127\.0\.0\.1, which is a private or local address/],
		[`http://0.0.0.0:${c}/`, /points to 0\.0\.0\.0, which is a private or local address/],
		[`http://localhost:${c}/`, /points to localhost, which is a private or local address/],
		[`http://[::ffff:127.0.0.1]:${c}/`, /points to \[::ffff:7f00:1\], which is a private or local address/],
		[`http://0x7f.1:${c}/`, /points to 127\.0\.0\.1, which is a private or local address/],
		[`${imageHost.url}to-canary`, /redirected to 127\.0\.0\.1, which is a private or local address/],
		// n8n's own port, as in the report that started this, and a cloud metadata address.
		[`http://127.0.0.1:${n8n.options.port}/healthz`, /points to 127\.0\.0\.1, which is a private or local address/],
		['http://169.254.169.254/latest/meta-data/', /points to 169\.254\.169\.254, which is a private or local address/],
	];
	for (const [imageUrl, expected] of attacks) {
		canary.reset();
		const response = await post({ imageUrl });
		assert.equal(response.status, 400, `${imageUrl}: HTTP ${response.status} ${JSON.stringify(response.data)}`);
		assert.match(response.data.error ?? '', expected, imageUrl);
		assert.match(response.data.details ?? '', /N8N_SSRF_ALLOWED_HOSTNAMES/, imageUrl);
		assert.doesNotMatch(JSON.stringify(response.data), /internal secret|"status":"ok"/, imageUrl);
		assert.equal(canary.connections, 0, `${imageUrl} reached the canary`);
		const next = await post(readFileSync(good.file), { 'content-type': 'image/jpeg' });
		assert.equal(next.status, 200, `after ${imageUrl}`);
		assert.equal((await post({ imageUrl: goodUrl })).status, 200, `by URL after ${imageUrl}`);
	}
});
