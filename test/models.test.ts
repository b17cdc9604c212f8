import { DATA_DIR, DATASETS_DIR, MIRROR_DIR, TEMP_DIR } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
	Backbone,
	catalogBackbone,
	classify,
	customBackbone,
	extractFeatures,
	loadBackbone,
	tf,
	trainHead,
	type BackboneSpec,
} from '../engine';
import { GRAPH_KERNEL, writeGraphModel } from './helpers/graph-model';
import { serveFolder } from './helpers/server';

const V1_025 = 'tfjs-models/tfjs/mobilenet_v1_0.25_224';

function withEnv<T>(vars: Record<string, string>, run: () => Promise<T>): Promise<T> {
	const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
	Object.assign(process.env, vars);
	return run().finally(() => {
		for (const [k, v] of Object.entries(saved)) {
			if (v === undefined) delete process.env[k];
			else process.env[k] = v;
		}
	});
}

test('the three mirrored backbones load from the mirror folder with their feature sizes', async () => {
	const sizes: Record<string, number> = { 'mobilenet_v1_0.25_224': 256, 'mobilenet_v1_0.75_224': 768, 'mobilenet_v2_0.35_224': 1280 };
	for (const [id, size] of Object.entries(sizes)) {
		const backbone = await loadBackbone(catalogBackbone(id));
		assert.equal(backbone.featureSize, size, id);
		assert.ok(['onnxruntime', 'wasm', 'tensorflow', 'cpu'].includes(backbone.backend.name));
		assert.equal(await loadBackbone(catalogBackbone(id)), backbone, 'loaded once, then cached');
	}
});

test('an HTTP mirror is downloaded once into the cache, even by concurrent loads', async () => {
	const server = await serveFolder(MIRROR_DIR);
	const cache = path.join(TEMP_DIR, 'cache-http');
	try {
		await withEnv({ TL_MODEL_MIRROR: server.url, TL_MODEL_CACHE: cache }, async () => {
			const spec = catalogBackbone('mobilenet_v1_0.25_224');
			const [a, b] = await Promise.all([Backbone.load(spec), Backbone.load(spec)]);
			assert.equal(server.requests.filter((r) => r.path.endsWith('model.json')).length, 1);
			assert.equal(server.requests.length, 56, 'model.json and its 55 weight files');
			assert.ok(existsSync(path.join(cache, '127.0.0.1_' + new URL(server.url).port, ...V1_025.split('/'), 'model.json')));
			const again = await Backbone.load(spec);
			assert.equal(server.requests.length, 56, 'served from the cache');
			const image = readFileSync(path.join(DATASETS_DIR, 'cats_vs_dogs', 'images', 'cat', readdirFirst('cats_vs_dogs', 'cat')));
			const [fa] = await extractFeatures(a, [image]);
			const [fb] = await extractFeatures(again, [image]);
			assert.deepEqual(fa, fb);
			[a, b, again].forEach((m) => m.dispose());
		});
	} finally {
		await server.close();
	}
});

function readdirFirst(dataset: string, label: string): string {
	const line = readFileSync(path.join(DATASETS_DIR, dataset, 'labels.csv'), 'utf8').split('\n').find((l) => l.endsWith(`,${label}`))!;
	return path.basename(line.split(',')[0]);
}

test('a mirror serving corrupt or truncated weights gives a clear error and caches nothing', async () => {
	const shard = `/${V1_025}/group55-shard1of1`;
	const original = readFileSync(path.join(MIRROR_DIR, shard));
	for (const damage of ['corrupt', 'truncated'] as const) {
		const server = await serveFolder(MIRROR_DIR, (urlPath, _req, res) => {
			if (urlPath !== shard) return false;
			const body = damage === 'corrupt' ? Buffer.alloc(original.length, 0xff) : original.subarray(0, 1000);
			res.writeHead(200, { 'content-length': body.length }).end(body);
			return true;
		});
		const cache = path.join(TEMP_DIR, `cache-${damage}`);
		try {
			await withEnv({ TL_MODEL_MIRROR: server.url, TL_MODEL_CACHE: cache }, async () => {
				await assert.rejects(
					Backbone.load(catalogBackbone('mobilenet_v1_0.25_224')),
					(e: Error & { hint?: string }) => (damage === 'corrupt' ? /corrupt weight file/ : /truncated or corrupt download/).test(e.message) && !!e.hint,
				);
				const cachedJson = path.join(cache, '127.0.0.1_' + new URL(server.url).port, ...V1_025.split('/'), 'model.json');
				assert.ok(!existsSync(cachedJson), 'a failed download is never cached as complete');
			});
		} finally {
			await server.close();
		}
	}
});

test('a private host gets the credential header, and a refusal says to add one', async () => {
	const server = await serveFolder(MIRROR_DIR, (_path, req, res) => {
		if (req.headers['x-api-key'] === 'secret') return false;
		res.writeHead(401).end();
		return true;
	});
	try {
		await withEnv({ TL_MODEL_CACHE: path.join(TEMP_DIR, 'cache-private') }, async () => {
			const spec: BackboneSpec = customBackbone({ url: `${server.url}${V1_025}/model.json`, featureLayer: 'conv_pw_13_relu' });
			await assert.rejects(Backbone.load(spec), (e: Error & { hint?: string }) => /HTTP 401/.test(e.message) && /credential/.test(e.hint ?? ''));
			const backbone = await Backbone.load(spec, { auth: { headerName: 'X-API-Key', headerValue: 'secret' } });
			assert.equal(backbone.featureSize, 256);
			backbone.dispose();
		});
	} finally {
		await server.close();
	}
});

test('missing models and layers are named in the error', async () => {
	await assert.rejects(Backbone.load(customBackbone({ url: path.join(TEMP_DIR, 'nope', 'model.json') })), /Could not read model file .*ENOENT/);
	await assert.rejects(
		Backbone.load(customBackbone({ url: path.join(MIRROR_DIR, V1_025, 'model.json'), featureLayer: 'no_such_layer' })),
		(e: Error & { hint?: string }) => /no layer named "no_such_layer"/.test(e.message) && /conv_preds|reshape/.test(e.hint ?? ''),
	);
	assert.throws(() => catalogBackbone('resnet_9000'), /Unknown backbone/);
});

test('preprocessing is right: MobileNet v1 0.75 names the ImageNet sanity photos as the reference does', async () => {
	const classIndex = JSON.parse(readFileSync(path.join(DATA_DIR, 'imagenet', 'imagenet_class_index.json'), 'utf8')) as Record<string, [string, string]>;
	const rows = readFileSync(path.join(DATA_DIR, 'imagenet_sanity', 'labels.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
	// The whole network, softmax included: a custom model whose output is the 1000 classes.
	const classifier = await loadBackbone(customBackbone({ url: path.join(MIRROR_DIR, 'tfjs-models/tfjs/mobilenet_v1_0.75_224/model.json') }));
	const probabilities = await extractFeatures(classifier, rows.map(([p]) => readFileSync(path.join(DATA_DIR, 'imagenet_sanity', p))));
	const correct = probabilities.filter((p, i) => {
		const top = (p as Float32Array).indexOf(Math.max(...(p as Float32Array)));
		return classIndex[top][0] === rows[i][1];
	}).length;
	assert.equal(correct, 20, 'reference: 20/20 with centre crop');
});

function sampleImages(perClass: number): Buffer[] {
	return ['cat', 'dog'].flatMap((label) =>
		readFileSync(path.join(DATASETS_DIR, 'cats_vs_dogs', 'labels.csv'), 'utf8')
			.split('\n')
			.filter((l) => l.endsWith(`,${label}`))
			.slice(0, perClass)
			.map((l) => readFileSync(path.join(DATASETS_DIR, 'cats_vs_dogs', l.split(',')[0]))),
	);
}

test('ONNX Runtime and the batch-norm-folded TF.js path give the features of the original model', async () => {
	const images = sampleImages(4);
	for (const id of ['mobilenet_v1_0.25_224', 'mobilenet_v1_0.75_224', 'mobilenet_v2_0.35_224']) {
		const spec = catalogBackbone(id);
		const reference = await Backbone.load(spec, { backend: 'wasm', compile: false });
		const onnx = await Backbone.load(spec, { backend: 'onnxruntime', precision: 'float32' });
		const folded = await Backbone.load(spec, { backend: 'wasm' });
		assert.equal(onnx.backend.name, 'onnxruntime', onnx.backend.fallbackReason);
		assert.equal(folded.backend.name, 'wasm');
		const expected = (await extractFeatures(reference, images)) as Float32Array[];
		const scale = Math.max(...expected.map((f) => Math.max(...f.map(Math.abs))));
		for (const candidate of [onnx, folded]) {
			const actual = (await extractFeatures(candidate, images)) as Float32Array[];
			const difference = Math.max(...actual.map((f, i) => Math.max(...f.map((v, k) => Math.abs(v - expected[i][k])))));
			assert.ok(difference <= 1e-3 * scale, `${id} on ${candidate.backend.name}: max difference ${difference}, feature scale ${scale}`);
		}
		[reference, onnx, folded].forEach((b) => b.dispose());
	}
});

test('no tensor leaks: the tensor count is flat over 200 image classifications on each path and 10,000 head classifications', async () => {
	const images = sampleImages(4);
	const labels = ['cat', 'cat', 'cat', 'cat', 'dog', 'dog', 'dog', 'dog'];
	for (const options of [{ backend: 'onnxruntime' as const }, { backend: 'wasm' as const }, { backend: 'wasm' as const, compile: false }]) {
		const backbone = await Backbone.load(catalogBackbone('mobilenet_v1_0.25_224'), options);
		const features = (await extractFeatures(backbone, images)) as Float32Array[];
		const { head } = await trainHead(features, labels, { epochs: 5 });
		const before = tf.memory().numTensors;
		for (let i = 0; i < 200; i++) {
			const [f] = (await extractFeatures(backbone, [images[i % images.length]])) as Float32Array[];
			classify(head, [f]);
		}
		assert.equal(tf.memory().numTensors, before, JSON.stringify(options));
		if (options.backend === 'onnxruntime') {
			for (let i = 0; i < 10_000; i++) classify(head, [features[i % features.length]]);
			assert.equal(tf.memory().numTensors, before, 'after 10,000 head classifications');
		}
		backbone.dispose();
	}
});

test('a custom TensorFlow.js graph model works as a backbone, with its normalisation', async () => {
	const kernel = GRAPH_KERNEL;
	const file = writeGraphModel(path.join(TEMP_DIR, 'graph-model'));
	const backbone = await Backbone.load(customBackbone({ url: file, inputSize: 16, normalization: 'zeroToOne', outputNode: 'features' }));
	assert.equal(backbone.featureSize, 4);
	const sharp = (await import('sharp')).default;
	const solid = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 255, g: 51, b: 102 } } }).png().toBuffer();
	const [features] = (await extractFeatures(backbone, [solid])) as Float32Array[];
	const x = [1, 0.2, 0.4];
	const expected = [0, 1, 2, 3].map((c) => Math.max(0, x[0] * kernel[c] + x[1] * kernel[4 + c] + x[2] * kernel[8 + c]));
	features.forEach((v, c) => assert.ok(Math.abs(v - expected[c]) < 1e-5, `channel ${c}: ${v} vs ${expected[c]}`));
	backbone.dispose();
});

test('a model the compiler cannot take runs on TF.js, and the output says why', async () => {
	// ml5's Darknet-tiny: LeakyReLU and max pooling are not compiled.
	const darknet = await Backbone.load(customBackbone({ url: path.join(DATA_DIR, 'models', 'darknet_tiny_imagenet', 'model.json'), normalization: 'zeroToOne' }));
	assert.notEqual(darknet.backend.name, 'onnxruntime');
	assert.match(darknet.backend.fallbackReason ?? '', /could not be compiled \(layer .*: (LeakyReLU|MaxPooling2D) is not compiled\)/);
	assert.equal(darknet.featureSize, 1000);
	darknet.dispose();
});
