/**
 * int8 backbones: features close to float32's on real photos for every mirrored backbone, the
 * calibration cached and reported, Automatic falling back to float32 when the int8 graph is off,
 * and a linear probe that scores about the same in both precisions.
 */
import { TEMP_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { Backbone, catalogBackbone, computeMetrics, extractFeatures, fetchModelArtifacts, predictHead, trainHead, type ImageBackboneSpec } from '../engine';
import { onnx } from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { NORMALIZATIONS } from '../engine/backbones/catalog';
import { compiledBase, planToOnnx } from '../engine/runtimes/onnx';
import { cosineAgreement, floatLayers, networkStats, quantizedTensors } from '../engine/runtimes/quantize';
import { compileLayersModel } from '../engine/runtimes/compiler';
import { argMax } from '../engine/head/head';

/**
 * Each mirrored backbone and the mean cosine its int8 features keep with float32's on `photos`.
 * Measured: 0.9979, 0.9988, 0.9973; with every layer in int8 (the graph of COMPILER_VERSION 6) the
 * same photos gave 0.9965, 0.9981, 0.9965, which these bounds refuse.
 */
const MIRRORED = [
	['mobilenet_v1_0.25_224', 0.9972],
	['mobilenet_v1_0.75_224', 0.9984],
	['mobilenet_v2_0.35_224', 0.9969],
] as const;
// Real photos of both datasets; the first 16 (one batch) calibrate, all of them are compared.
const photos = [...sample('flowers5', 4, 'test'), ...sample('cats_vs_dogs', 6, 'test')].map((p) => p.bytes);

/** Each test starts from an empty model cache, so no calibration is inherited. */
function freshCache(): string {
	const dir = mkdtempSync(path.join(TEMP_DIR, 'cache-'));
	process.env.TL_MODEL_CACHE = dir;
	return dir;
}

async function features(spec: ImageBackboneSpec, precision: 'float32' | 'int8' | 'auto', images = photos, backend: 'auto' | 'wasm' = 'auto') {
	const backbone = await Backbone.load(spec, { precision, backend });
	try {
		const out = (await extractFeatures(backbone, images)) as Float32Array[];
		return { out, precision: backbone.precision, parity: backbone.parity, backend: backbone.backend };
	} finally {
		backbone.dispose();
	}
}

async function calibrationFile(spec: ImageBackboneSpec): Promise<string> {
	return `${compiledBase(spec, await fetchModelArtifacts(spec.url))}-int8-calibration.json`;
}

for (const [id, bound] of MIRRORED) {
	test(`int8 features of ${id} agree with float32 on real photos (mean cosine >= ${bound}), calibrated on the first batch`, async () => {
		freshCache();
		const spec = catalogBackbone(id) as ImageBackboneSpec;
		const float = await features(spec, 'float32');
		assert.equal(float.precision, 'float32');
		const int8 = await features(spec, 'int8');
		assert.equal(int8.backend.name, 'onnxruntime');
		assert.equal(int8.precision, 'int8');
		const agreement = cosineAgreement(int8.out, float.out);
		assert.ok(agreement.mean >= bound, `mean cosine ${agreement.mean}`);
		// Quantized for real: not the float32 graph under another name.
		assert.ok(agreement.mean < 0.9999, `mean cosine ${agreement.mean}`);
		assert.equal(int8.parity?.calibration, 'images');
		assert.equal(int8.parity?.calibrationImages, 16);
		assert.equal(int8.parity?.passed, true);
		const saved = JSON.parse(readFileSync(await calibrationFile(spec), 'utf8'));
		assert.equal(saved.calibration, 'images');
		const plan = compileLayersModel(await fetchModelArtifacts(spec.url), spec);
		assert.deepEqual(saved.ranges.map((r: [string]) => r[0]).sort(), quantizedTensors(plan).sort());
	});
}

test('a first batch of fewer than 8 images calibrates from the network itself (ReLU6 caps, batch-norm statistics)', async () => {
	freshCache();
	const spec = catalogBackbone('mobilenet_v2_0.35_224') as ImageBackboneSpec;
	const backbone = await Backbone.load(spec, { precision: 'int8' });
	try {
		const [first] = (await extractFeatures(backbone, photos.slice(0, 1))) as Float32Array[];
		assert.equal(backbone.parity?.calibration, 'network');
		assert.equal(backbone.parity?.calibrationImages, 0);
		const rest = (await extractFeatures(backbone, photos.slice(1))) as Float32Array[];
		const float = await features(spec, 'float32');
		const agreement = cosineAgreement([first, ...rest], float.out);
		assert.ok(agreement.mean >= 0.95, `mean cosine ${agreement.mean}`);
	} finally {
		backbone.dispose();
	}
});

test('Automatic uses int8 when it agrees with float32, and float32 when a bad calibration makes it disagree', async () => {
	const spec = catalogBackbone('mobilenet_v1_0.25_224') as ImageBackboneSpec;
	freshCache();
	const good = await features(spec, 'auto');
	assert.equal(good.precision, 'int8');
	assert.equal(good.parity?.passed, true);

	freshCache();
	const float = await features(spec, 'float32');
	// Every activation squeezed into [0, 0.01]: int8 saturates everywhere.
	const plan = compileLayersModel(await fetchModelArtifacts(spec.url), spec);
	const file = await calibrationFile(spec);
	writeFileSync(file, JSON.stringify({ calibration: 'images', calibrationImages: 16, ranges: quantizedTensors(plan).map((t) => [t, [0, 0.01]]), means: [] }));
	const forced = await features(spec, 'int8');
	assert.equal(forced.precision, 'int8');
	const bad = cosineAgreement(forced.out, float.out).mean;
	assert.ok(bad < 0.95, `the bad calibration still agrees: ${bad}`);
	const auto = await features(spec, 'auto');
	assert.equal(auto.precision, 'float32');
	assert.equal(auto.parity?.passed, false);
	// The parity check ran on the first batch (extractFeatures' 16 images).
	const firstBatch = cosineAgreement(forced.out.slice(0, 16), float.out.slice(0, 16)).mean;
	assert.ok(Math.abs(auto.parity!.meanCosine - firstBatch) < 1e-3, `parity ${auto.parity!.meanCosine}, measured ${firstBatch}`);
	assert.deepEqual(auto.out, float.out);
	assert.equal(existsSync(file), false, 'the calibration that failed is dropped, for the next process to calibrate again');
});

test('int8 asked for where ONNX Runtime does not run: float32, and the reason says so', async () => {
	freshCache();
	const spec = catalogBackbone('mobilenet_v1_0.25_224') as ImageBackboneSpec;
	const result = await features(spec, 'int8', photos.slice(0, 2), 'wasm');
	assert.equal(result.precision, 'float32');
	assert.match(result.backend.fallbackReason ?? '', /int8 runs on ONNX Runtime only/);
	assert.equal(existsSync(await calibrationFile(spec)), false);
});

/** Mean test accuracy over seeds of a linear head on the dataset's train split. */
async function probe(dataset: string, spec: ImageBackboneSpec, precision: 'float32' | 'int8', seeds: number[]): Promise<number> {
	const train = sample(dataset, 1000, 'train');
	const testSet = sample(dataset, 1000, 'test');
	const backbone = await Backbone.load(spec, { precision });
	try {
		const trainFeatures = (await extractFeatures(backbone, train.map((e) => e.bytes))) as Float32Array[];
		const testFeatures = (await extractFeatures(backbone, testSet.map((e) => e.bytes))) as Float32Array[];
		assert.equal(backbone.precision, precision);
		let sum = 0;
		for (const seed of seeds) {
			const { head } = await trainHead(trainFeatures, train.map((e) => e.label), { seed });
			const predicted = predictHead(head, testFeatures).map(argMax);
			sum += computeMetrics(head.labels, testSet.map((e) => head.labels.indexOf(e.label)), predicted).accuracy;
		}
		return sum / seeds.length;
	} finally {
		backbone.dispose();
	}
}

// The 1.5-point bound over more seeds is `npm run eval -- --precision int8`'s measurement; this
// cheaper run (one backbone, two seeds) allows three points, about two test images of flowers5.
for (const dataset of ['cats_vs_dogs', 'flowers5']) {
	test(`a linear probe on ${dataset} scores within 3 points in int8 of float32 (MobileNet v1 0.25, 2 seeds)`, async () => {
		freshCache();
		const spec = catalogBackbone('mobilenet_v1_0.25_224') as ImageBackboneSpec;
		const float = await probe(dataset, spec, 'float32', [1, 2]);
		const int8 = await probe(dataset, spec, 'int8', [1, 2]);
		assert.ok(int8 >= float - 0.03, `int8 ${int8.toFixed(3)}, float32 ${float.toFixed(3)}`);
	});
}

test('calibrated on a first batch of one class, int8 keeps the features of the other classes close to float32 (mean cosine >= 0.995)', async () => {
	// Datasets often list their images class by class, so the first batch may hold one class only.
	freshCache();
	const spec = catalogBackbone('mobilenet_v1_0.75_224') as ImageBackboneSpec;
	const firstBatch = sample('flowers5', 16, 'train').filter((e) => e.label === 'daisy').map((e) => e.bytes);
	const others = sample('flowers5', 4, 'test').filter((e) => e.label !== 'daisy').map((e) => e.bytes);
	assert.equal(firstBatch.length, 16);
	const backbone = await Backbone.load(spec, { precision: 'int8' });
	try {
		await extractFeatures(backbone, firstBatch);
		assert.equal(backbone.parity?.calibration, 'images');
		const int8 = (await extractFeatures(backbone, others)) as Float32Array[];
		const float = await features(spec, 'float32', others);
		// Without bias correction, rounding the weights moved every image's features the same way: 0.988.
		const agreement = cosineAgreement(int8, float.out);
		assert.ok(agreement.mean >= 0.995, `mean cosine ${agreement.mean}`);
	} finally {
		backbone.dispose();
	}
});

/** The op types of a model's nodes, counted, and the model itself. */
function decode(bytes: Uint8Array): { model: onnx.ModelProto; counts: Map<string, number> } {
	const model = onnx.ModelProto.decode(bytes);
	const counts = new Map<string, number>();
	for (const node of model.graph!.node!) counts.set(node.opType!, (counts.get(node.opType!) ?? 0) + 1);
	return { model, counts };
}

for (const [id, int8Convs, floatConvs] of [
	['mobilenet_v1_0.75_224', 25, ['conv1_relu', 'conv_dw_1_relu']],
	['mobilenet_v2_0.35_224', 50, ['Conv1_relu', 'expanded_conv_depthwise_relu']],
] as const) {
	test(`the int8 graph of ${id} keeps the layer that reads the image and the one after it in float, and ONNX Runtime runs the ${int8Convs} others as integer convolutions`, async () => {
		freshCache();
		const spec = catalogBackbone(id) as ImageBackboneSpec;
		const plan = compileLayersModel(await fetchModelArtifacts(spec.url), spec);
		assert.deepEqual([...floatLayers(plan)], floatConvs);
		const { model } = decode(planToOnnx(plan, NORMALIZATIONS[spec.normalization], { int8: networkStats(plan) }));
		const initializers = new Set(model.graph!.initializer!.map((t) => t.name));
		const convs = model.graph!.node!.filter((n) => n.opType === 'Conv');
		// A float layer reads its weights straight from an initializer, an int8 one through DequantizeLinear.
		const float = convs.filter((n) => initializers.has(n.input![1])).map((n) => n.input![1].replace(/_w__\d+$/, ''));
		assert.deepEqual(float, floatConvs);
		const quantizedOutputs = model.graph!.node!.filter((n) => n.opType === 'QuantizeLinear').map((n) => n.input![0]);
		// The first layer's output feeds a float layer only, so it is never rounded to uint8; the second's feeds an int8 layer.
		assert.equal(quantizedOutputs.some((name) => name.startsWith(`${floatConvs[0]}__`)), false);
		assert.equal(quantizedOutputs.some((name) => name.startsWith(`${floatConvs[1]}__`)), true);

		const optimized = path.join(process.env.TL_MODEL_CACHE!, `${id}-optimized.onnx`);
		const session = await ort.InferenceSession.create(planToOnnx(plan, NORMALIZATIONS[spec.normalization], { int8: networkStats(plan) }), {
			// The level that fuses QDQ into integer kernels; 'all' adds layout changes for this CPU only.
			graphOptimizationLevel: 'extended',
			optimizedModelFilePath: optimized,
		});
		await session.release();
		const { counts } = decode(readFileSync(optimized));
		assert.equal(counts.get('QLinearConv'), int8Convs);
		assert.equal((counts.get('Conv') ?? 0) + (counts.get('FusedConv') ?? 0), floatConvs.length);
	});
}
