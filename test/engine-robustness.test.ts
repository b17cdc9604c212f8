/**
 * What production brings that a single test process hides: TF.js used first thing in a fresh
 * process, backbones evicted while in use, models replaced on disk, hosts that compress.
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync, writeFileSync, mkdirSync, symlinkSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import {
	Backbone,
	ModelStore,
	catalogBackbone,
	classify,
	customBackbone,
	downloadImage,
	exportModel,
	extractFeatures,
	loadBackbone,
	saveTrainedModel,
	tf,
	trainHead,
	type ImageBackboneSpec,
} from '../engine';
import { writeGraphModel } from './helpers/graph-model';
import { serveFolder } from './helpers/server';

const ENGINE = path.resolve(__dirname, '..', 'engine');
const V1_025 = path.join(MIRROR_DIR, 'tfjs-models', 'tfjs', 'mobilenet_v1_0.25_224');
const pets = sample('cats_vs_dogs', 3);
const images = pets.map((p) => p.bytes);

interface Fresh {
	code: number | null;
	stderr: string;
	/** What the script printed with `report(...)`. */
	result: Record<string, unknown>;
}

/**
 * Runs `script` as the first thing a new Node process does, with the engine as `engine` and
 * `report(value)` to hand a result back; `args` reaches the script as `args`.
 */
async function fresh(script: string, args: Record<string, unknown> = {}, env: Record<string, string> = {}, nodeFlags: string[] = []): Promise<Fresh> {
	const program = `
		const engine = require(${JSON.stringify(ENGINE)});
		const args = ${JSON.stringify(args)};
		const report = (value) => console.log('RESULT ' + JSON.stringify({ ...value, listeners: process.listenerCount('uncaughtException') }));
		(async () => { ${script} })().catch((error) => { console.error('FAILED ' + error.stack); process.exitCode = 1; });`;
	const { code, stdout, stderr } = await promisify(execFile)(process.execPath, [...nodeFlags, '-e', program], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 })
		.then((r) => ({ code: 0, ...r }))
		.catch((error: { code: number; stdout: string; stderr: string }) => error);
	const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
	return { code, stderr, result: line ? JSON.parse(line.slice(7)) : {} };
}

/** A fresh process that ran without an error, a TF.js complaint or a pile of process listeners. */
function assertClean(run: Fresh, what: string): void {
	assert.equal(run.code, 0, `${what}: ${run.stderr}`);
	assert.doesNotMatch(run.stderr, /MaxListenersExceededWarning|has not yet been initialized|Unhandled/i, what);
	assert.ok((run.result.listeners as number) <= 1, `${what}: ${run.result.listeners} uncaughtException listeners`);
}

const near = (a: number[], b: ArrayLike<number>, what: string) =>
	a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-4 * Math.max(1, Math.abs(v)), `${what}: ${v} vs ${b[i]} at ${i}`));

test('every entry point that touches TF.js works as the first call of a fresh process, 20 times over', async () => {
	const store = path.join(TEMP_DIR, 'fresh-store');
	// float32: the TF.js paths below are compared with these features.
	const backbone = await loadBackbone(catalogBackbone('mobilenet_v1_0.25_224'), { precision: 'float32' });
	const features = (await extractFeatures(backbone, images)) as Float32Array[];
	const trained = await trainHead(features, pets.map((p) => p.label), { epochs: 20 });
	const saved = await saveTrainedModel(new ModelStore(store), 'pets', trained, backbone.spec, { resizeMode: 'centreCrop', l2Normalize: false });
	const modelFile = path.join(TEMP_DIR, 'pets.tlmodel');
	writeFileSync(modelFile, exportModel(saved));
	const expected = classify(trained.head, features).map((p) => p.confidence);
	const imageFiles = pets.map((p) => p.file);
	const env = { TL_MODEL_STORE: store };
	const twentyTimes = `
		const out = [];
		for (let i = 0; i < 20; i++) out.push(engine.classify(model.head, features).map((p) => p.confidence));
		if (out.some((o) => JSON.stringify(o) !== JSON.stringify(out[0]))) throw new Error('answers differ');`;

	const cases: [string, string, Record<string, string>?][] = [
		[
			'ONNX backbone, then the TF.js head',
			`const model = await new engine.ModelStore().load('pets');
			const backbone = await engine.loadBackbone(model.manifest.backbone, { precision: 'float32' });
			const features = await engine.extractFeatures(backbone, args.imageFiles.map((f) => require('fs').readFileSync(f)));
			${twentyTimes}
			report({ confidences: out[0], backend: backbone.backend.name });`,
		],
		[
			'the head alone, on features',
			`const model = await new engine.ModelStore().load('pets');
			const features = args.features.map((f) => Float32Array.from(f));
			${twentyTimes}
			report({ confidences: out[0] });`,
		],
		[
			'a model file',
			`const model = engine.importModel(require('fs').readFileSync(args.modelFile));
			const features = args.features.map((f) => Float32Array.from(f));
			${twentyTimes}
			report({ confidences: out[0] });`,
		],
		[
			'the compiled TF.js path',
			`const backbone = await engine.loadBackbone(engine.catalogBackbone('mobilenet_v1_0.25_224'), { backend: 'wasm' });
			const [f] = await engine.extractFeatures(backbone, [require('fs').readFileSync(args.imageFiles[0])]);
			report({ features: Array.from(f.slice(0, 8)), backend: backbone.backend.name, current: engine.tf.getBackend() });`,
		],
		[
			'a layers model as TF.js loads it',
			`const backbone = await engine.Backbone.load(engine.catalogBackbone('mobilenet_v1_0.25_224'), { backend: 'wasm', compile: false });
			const [f] = await engine.extractFeatures(backbone, [require('fs').readFileSync(args.imageFiles[0])]);
			report({ features: Array.from(f.slice(0, 8)), backend: backbone.backend.name, current: engine.tf.getBackend() });`,
		],
		[
			'the backend set by TL_BACKEND',
			`const backbone = await engine.loadBackbone(engine.catalogBackbone('mobilenet_v1_0.25_224'));
			const [f] = await engine.extractFeatures(backbone, [require('fs').readFileSync(args.imageFiles[0])]);
			report({ features: Array.from(f.slice(0, 8)), backend: backbone.backend.name, current: engine.tf.getBackend() });`,
			{ TL_BACKEND: 'cpu' },
		],
		[
			'a graph model',
			`const backbone = await engine.Backbone.load(engine.customBackbone({ url: args.graphModel, inputSize: 16, normalization: 'zeroToOne', outputNode: 'features' }));
			const [f] = await engine.extractFeatures(backbone, [require('fs').readFileSync(args.imageFiles[0])]);
			report({ features: Array.from(f), backend: backbone.backend.name, current: engine.tf.getBackend() });`,
		],
	];
	const graphModel = writeGraphModel(path.join(TEMP_DIR, 'fresh-graph'));
	const graphBackbone = await Backbone.load(customBackbone({ url: graphModel, inputSize: 16, normalization: 'zeroToOne', outputNode: 'features' }));
	const [graphFeatures] = (await extractFeatures(graphBackbone, [images[0]])) as Float32Array[];
	graphBackbone.dispose();
	const args = { imageFiles, modelFile, graphModel, features: features.map((f) => Array.from(f)) };
	for (const [what, script, extraEnv] of cases) {
		const run = await fresh(script, args, { ...env, ...extraEnv });
		assertClean(run, what);
		const { result } = run;
		if (result.confidences) near(result.confidences as number[], expected, what);
		if (what === 'a graph model') near(result.features as number[], graphFeatures, what);
		else if (result.features) near(result.features as number[], features[0], what);
		if (result.current) assert.equal(result.current, result.backend, `${what}: TF.js runs on the backend it reports`);
		if (extraEnv?.TL_BACKEND) assert.equal(result.backend, extraEnv.TL_BACKEND, what);
	}
});

test('a wasm backend that cannot start is tried once, not once per call', async () => {
	// --jitless turns WebAssembly off: the wasm backend's start fails as it would on a locked-down host.
	const run = await fresh(
		`const head = { labels: ['a', 'b'], featureSize: 2, mean: new Float32Array(2), std: new Float32Array([1, 1]),
			layers: [{ units: 2, activation: 'softmax', kernel: new Float32Array([1, 0, 0, 1]), bias: new Float32Array(2) }] };
		const labels = [];
		for (let i = 0; i < 15; i++) {
			labels.push(engine.classify(head, [new Float32Array([2, 0])])[0].label);
			await engine.useBackend(i % 2 ? 'wasm' : 'auto');
		}
		report({ labels: [...new Set(labels)], backend: (await engine.useBackend('wasm')).name });`,
		{},
		{},
		['--jitless'],
	);
	assertClean(run, 'jitless');
	assert.deepEqual(run.result.labels, ['a']);
	assert.equal(run.result.backend, 'cpu');
	assert.equal((run.stderr.match(/Initialization of backend wasm failed/g) ?? []).length, 1, run.stderr);
});

test('a failed ONNX Runtime session release is logged, never an unhandled rejection', async () => {
	const run = await fresh(
		`const { OnnxExecutor } = require(${JSON.stringify(path.join(ENGINE, 'runtimes', 'onnx'))});
		const { compileLayersModel } = require(${JSON.stringify(path.join(ENGINE, 'runtimes', 'compiler'))});
		const spec = engine.catalogBackbone('mobilenet_v1_0.25_224');
		const artifacts = await engine.fetchModelArtifacts(spec.url);
		const executor = await OnnxExecutor.create(compileLayersModel(artifacts, spec), spec, artifacts);
		// A second release is refused by ONNX Runtime ("Session already disposed").
		executor.dispose();
		executor.dispose();
		await new Promise((resolve) => setTimeout(resolve, 200));
		report({});`,
	);
	assertClean(run, 'double release');
	assert.match(run.stderr, /could not release an ONNX Runtime session: Session already disposed/);
});

test('more concurrent extractions with distinct backbones than the cache holds all succeed, and leave no tensor behind', async () => {
	const url = path.join(V1_025, 'model.json');
	// Six distinct cache keys (the cache holds four): three feature layers at two input sizes.
	const specs: ImageBackboneSpec[] = ['conv_pw_13_relu', 'conv_pw_12_relu', 'conv_pw_11_relu'].flatMap((featureLayer) =>
		[224, 160].map((inputSize) => customBackbone({ url, featureLayer, inputSize })),
	);
	for (const backend of ['wasm', 'onnxruntime'] as const) {
		const before = tf.memory().numTensors;
		const runs = await Promise.all(
			specs.map(async (spec) => {
				const backbone = await loadBackbone(spec, { backend });
				// One image a batch: the extraction spans several turns of the event loop.
				return { backbone, features: await extractFeatures(backbone, images, { batchSize: 1 }) };
			}),
		);
		for (const { backbone, features } of runs) {
			assert.equal(backbone.backend.name, backend);
			features.forEach((f, i) => assert.ok(f instanceof Float32Array && f.length === backbone.featureSize, `${backbone.spec.featureLayer}@${backbone.spec.inputSize.width} image ${i}: ${f}`));
		}
		await new Promise((resolve) => setImmediate(resolve));
		// The first two fell out of the cache and were disposed once their extraction ended.
		for (const { backbone } of runs.slice(0, 2)) await assert.rejects(extractFeatures(backbone, images), /disposed/);
		for (const { backbone } of runs.slice(2)) {
			assert.equal(await loadBackbone(backbone.spec, { backend }), backbone, 'still cached');
			backbone.dispose();
		}
		assert.equal(tf.memory().numTensors, before, `${backend}: tensors left behind`);
	}
});

test('ONNX Runtime applies a softmax over the channels of a feature map, as TF.js does', async () => {
	// MobileNet v1 0.25 with a softmax over the 256 channels of its last feature map, on real weights.
	const dir = path.join(TEMP_DIR, 'channel-softmax');
	mkdirSync(dir, { recursive: true });
	const modelJson = JSON.parse(readFileSync(path.join(V1_025, 'model.json'), 'utf8'));
	const config = modelJson.modelTopology.model_config.config;
	// The classifier on top goes (its weights fill the last file); the softmax takes its place.
	config.layers = config.layers.slice(0, config.layers.findIndex((l: { name: string }) => l.name === 'conv_pw_13_relu') + 1);
	config.layers.push({
		class_name: 'Activation',
		name: 'channel_softmax',
		inbound_nodes: [[['conv_pw_13_relu', 0, 0, {}]]],
		config: { name: 'channel_softmax', activation: 'softmax', trainable: false },
	});
	config.output_layers = [['channel_softmax', 0, 0]];
	modelJson.weightsManifest = modelJson.weightsManifest.filter((g: { weights: { name: string }[] }) => !g.weights.some((w) => w.name.startsWith('conv_preds/')));
	writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJson));
	for (const group of modelJson.weightsManifest) for (const shard of group.paths) symlinkSync(path.join(V1_025, shard), path.join(dir, shard));
	const spec = customBackbone({ url: path.join(dir, 'model.json'), featureLayer: 'channel_softmax' });
	const reference = await Backbone.load(spec, { backend: 'wasm', compile: false });
	const expected = (await extractFeatures(reference, images)) as Float32Array[];
	for (const backend of ['onnxruntime', 'wasm'] as const) {
		const compiled = await Backbone.load(spec, { backend, precision: 'float32' });
		assert.equal(compiled.backend.name, backend, compiled.backend.fallbackReason);
		const actual = (await extractFeatures(compiled, images)) as Float32Array[];
		actual.forEach((f, i) => near(Array.from(expected[i]), f, `${backend} image ${i}`));
		compiled.dispose();
	}
	reference.dispose();
	// Averaged per-pixel channel probabilities: they sum to 1 per image.
	expected.forEach((f) => assert.ok(Math.abs(f.reduce((a, b) => a + b, 0) - 1) < 1e-4));
});

test('a host that gzips its files with a Content-Length, and a shard with a space in its name, load once then from the cache', async () => {
	// One weight file named "group 1.bin", beside a copy of model.json that names it.
	const dir = path.join(TEMP_DIR, 'spaced', 'model');
	mkdirSync(dir, { recursive: true });
	const modelJson = JSON.parse(readFileSync(path.join(V1_025, 'model.json'), 'utf8'));
	const shards = modelJson.weightsManifest.flatMap((g: { paths: string[] }) => g.paths.map((p) => readFileSync(path.join(V1_025, p))));
	writeFileSync(path.join(dir, 'group 1.bin'), Buffer.concat(shards));
	modelJson.weightsManifest = [{ paths: ['group 1.bin'], weights: modelJson.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights) }];
	writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJson));
	const server = await serveFolder(path.dirname(dir), (urlPath, req, res) => {
		if (!/gzip/.test(String(req.headers['accept-encoding']))) return false;
		const body = zlib.gzipSync(readFileSync(path.join(path.dirname(dir), urlPath)));
		res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': body.length }).end(body);
		return true;
	});
	const saved = { cache: process.env.TL_MODEL_CACHE };
	process.env.TL_MODEL_CACHE = path.join(TEMP_DIR, 'cache-spaced');
	try {
		const spec = customBackbone({ url: `${server.url}model/model.json`, featureLayer: 'conv_pw_13_relu' });
		const first = await Backbone.load(spec);
		assert.deepEqual(server.requests.map((r) => r.path), ['/model/model.json', '/model/group 1.bin']);
		const second = await Backbone.load(spec);
		assert.equal(server.requests.length, 2, 'the second load is served from the cache');
		// The mirror's copy read with the same settings (the catalog id now reads 320x320 with the generalised mean).
		const reference = await loadBackbone(customBackbone({ url: path.join(V1_025, 'model.json'), featureLayer: 'conv_pw_13_relu' }));
		const [a, b, c] = await Promise.all([first, second, reference].map(async (m) => ((await extractFeatures(m, [images[0]])) as Float32Array[])[0]));
		assert.deepEqual(a, b);
		near(Array.from(c), a, 'the served model is the mirrored one');
		[first, second].forEach((m) => m.dispose());
	} finally {
		process.env.TL_MODEL_CACHE = saved.cache;
		await server.close();
	}
});

test('image downloads stay within the download limit, compressed or not, and a body cut short is refused', async () => {
	// A JPEG start, so that only its decoded size stops it.
	const bomb = zlib.gzipSync(Buffer.concat([pets[0].bytes.subarray(0, 16), Buffer.alloc(3 * 1024 * 1024)]));
	const server = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		if (urlPath === '/bomb') {
			res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': bomb.length }).end(bomb);
			return true;
		}
		if (urlPath !== '/cut') return false;
		res.writeHead(200, { 'content-length': 5000 }).write(pets[0].bytes.subarray(0, 1000));
		setTimeout(() => res.socket?.destroy(), 50);
		return true;
	});
	process.env.TL_IMAGE_MAX_MB = '1';
	// Image URLs on loopback are refused unless an administrator allows them.
	process.env.N8N_SSRF_ALLOWED_IP_RANGES = '127.0.0.1/32';
	try {
		const photo = path.relative(DATASETS_DIR, pets[0].file);
		assert.deepEqual(await downloadImage(server.url + photo), pets[0].bytes);
		await assert.rejects(downloadImage(server.url + 'bomb'), /bomb is larger than 1 MB/);
		await assert.rejects(downloadImage(server.url + 'cut'), /Could not download .*cut.*aborted/);
	} finally {
		delete process.env.TL_IMAGE_MAX_MB;
		delete process.env.N8N_SSRF_ALLOWED_IP_RANGES;
		await server.close();
	}
});

test('a model deleted and trained again is loaded anew, not served from memory', async () => {
	const store = new ModelStore(path.join(TEMP_DIR, 'store-replaced'));
	const spec = catalogBackbone('mobilenet_v1_0.25_224');
	const prep = { resizeMode: 'centreCrop' as const, l2Normalize: false };
	const features = Array.from({ length: 8 }, (_, i) => Float32Array.from({ length: 4 }, (_, d) => (d === i % 2 ? 2 : 0) + i / 10));
	const first = await trainHead(features, features.map((_, i) => (i % 2 ? 'b' : 'a')), { epochs: 3 });
	await saveTrainedModel(store, 'm', first, spec, prep);
	assert.deepEqual((await store.load('m')).head.labels, ['a', 'b']);
	await fs.rm(path.join(store.root, 'm'), { recursive: true });
	const second = await trainHead(features, features.map((_, i) => (i % 2 ? 'y' : 'x')), { epochs: 3 });
	await saveTrainedModel(store, 'm', second, spec, prep);
	const loaded = await store.load('m');
	assert.equal(loaded.manifest.version, 1);
	assert.deepEqual(loaded.head.labels, ['x', 'y']);
	assert.deepEqual(loaded.head.layers[0].kernel, second.head.layers[0].kernel);
	assert.equal(await store.load('m'), loaded, 'unchanged on disk: served from memory');
});
