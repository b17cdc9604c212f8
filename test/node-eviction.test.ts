/** A backbone the cache drops in the middle of a node's run stays usable until that run ends. */
import { DATASETS_DIR, MIRROR_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { catalogBackbone, customBackbone, loadBackbone } from '../engine';
import { runNode } from './helpers/n8n';
import { serveFolder } from './helpers/server';

const V1_025 = path.join(MIRROR_DIR, 'tfjs-models', 'tfjs', 'mobilenet_v1_0.25_224', 'model.json');
const relative = sample('cats_vs_dogs', 4).map((e) => path.relative(DATASETS_DIR, e.file));

test('Extract Features keeps its backbone while the next chunk of images downloads, though the cache drops it then', async () => {
	let requests = 0;
	let openGate!: () => void;
	const gate = new Promise<void>((resolve) => (openGate = resolve));
	let reachedGate!: () => void;
	const atGate = new Promise<void>((resolve) => (reachedGate = resolve));
	const server = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		// Batch size 1 makes chunks of four: the fifth image opens the second chunk.
		const held = ++requests === 5;
		if (held) reachedGate();
		void (held ? gate : Promise.resolve()).then(() => fs.readFile(path.join(DATASETS_DIR, urlPath))).then((bytes) => res.end(bytes));
		return true;
	});
	process.env.N8N_SSRF_ALLOWED_IP_RANGES = '127.0.0.1/32';
	const others = ['conv_pw_13_relu', 'conv_pw_12_relu'].flatMap((featureLayer) => [224, 160].map((inputSize) => customBackbone({ url: V1_025, featureLayer, inputSize })));
	try {
		const items = relative.map((file) => ({ json: { url: server.url + file } }));
		const running = runNode('extractFeatures', { backbone: 'mobilenet_v1_0.25_224', imageSource: 'url', imageUrl: '={{ $json.url }}', options: { batchSize: 1 } }, items);
		await atGate;
		const used = await loadBackbone(catalogBackbone('mobilenet_v1_0.25_224'));
		// Four other backbones fill the four-entry cache: the node's falls out while its second chunk downloads.
		const loaded = [];
		for (const spec of others) loaded.push(await loadBackbone(spec));
		const reloaded = await loadBackbone(catalogBackbone('mobilenet_v1_0.25_224'));
		assert.notEqual(reloaded, used, "the node's backbone left the cache");
		loaded.push(reloaded);
		await new Promise((resolve) => setTimeout(resolve, 50));
		openGate();
		const run = await running;
		assert.equal(run.error, undefined, run.error?.message);
		assert.equal(run.outputs[0].length, 8);
		run.outputs[0].forEach((o, i) => assert.ok(Array.isArray(o.json.features) && (o.json.features as number[]).length === 256, `item ${i}: ${JSON.stringify(o.json).slice(0, 200)}`));
		for (const b of loaded) b.dispose();
	} finally {
		delete process.env.N8N_SSRF_ALLOWED_IP_RANGES;
		openGate();
		await server.close();
	}
});
