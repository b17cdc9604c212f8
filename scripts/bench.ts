/**
 * Speed and memory of feature extraction, classification and head training.
 *   npm run bench [-- --json] [--quick] [--text-only] [--synthetic-mobilenet-v2-1.0]
 * ONNX Runtime rows come in float32 and int8 (calibrated on 16 flowers5 photos), each int8 row
 * with its ratio to the float32 row; Classify latency is measured in both.
 * Every image speed is also a ratio to a baseline measured in the same run: the backbone's Keras
 * layers model as TF.js loads it, `model.predict` on the wasm backend, batch 16. Every text speed
 * is a ratio to Universal Sentence Encoder Lite on one wasm thread, batch 32. With --json the last
 * line is one JSON object. Reads flowers5, BANKING77 and the mirror from TL_TEST_DATA (default
 * ../shared/data).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import {
	Backbone,
	catalogBackbone,
	classify,
	decodeImage,
	embedTexts,
	extractFeatures,
	l2Normalize,
	loadTextEncoder,
	tf,
	trainHead,
	useBackend,
	USE_LITE_ID,
	type BackendChoice,
	type TextEncoder,
} from '../engine';
import type { BackboneLoadOptions, Precision } from '../engine/backbones/backbone';
import { UseLiteEncoder } from '../engine/text/use-lite';
import { UseLitePool } from '../engine/text/use-lite-pool';
import { readDataset } from './dataset';
import { percentile } from './percentile';
import { syntheticMobileNetV2 } from './synthetic-mobilenet-v2';
import { readTextDataset } from './text-dataset';

const DATA_DIR = path.resolve(process.env.TL_TEST_DATA ?? path.join(__dirname, '..', '..', '..', 'shared', 'data'));
process.env.TL_MODEL_MIRROR ??= path.join(DATA_DIR, 'mirror');

const BACKBONES = ['mobilenet_v1_0.25_224', 'mobilenet_v1_0.75_224', 'mobilenet_v2_0.35_224'];
const BACKENDS: BackendChoice[] = ['onnxruntime', 'tensorflow', 'wasm', 'cpu'];
/** float32 and int8 on ONNX Runtime take turns this many times; each keeps its best. */
const ROUNDS = 3;

interface ImageRow {
	inputType: 'image';
	backbone: string;
	backend: string;
	batch: number;
	mode: 'end-to-end' | 'model-only';
	/** int8 only on ONNX Runtime, calibrated on 16 flowers5 photos first. */
	precision: Precision;
	imagesPerSecond: number;
	ratioToBaseline: number;
	/** int8 rows: to the float32 row of the same backbone, batch and mode. */
	ratioToFloat32?: number;
}

/** Texts through `embedTexts`: tokenising, encoding, copying the vectors out. */
interface TextRow {
	inputType: 'text';
	backbone: string;
	backend: string;
	/** Worker threads, each with its own wasm instance; 0 for the encoder on the main thread. */
	workers: number;
	batch: number;
	sentencesPerSecond: number;
	ratioToBaseline: number;
}

/** Runs `once` (which handles `count` images) until `seconds` have passed, at least twice. */
async function rate(count: number, once: () => Promise<unknown>, seconds: number): Promise<number> {
	await once(); // warm-up: first-call compilation and allocation are not throughput
	let images = 0;
	const started = performance.now();
	do {
		await once();
		images += count;
	} while (performance.now() - started < seconds * 1000 || images < 2 * count);
	return images / ((performance.now() - started) / 1000);
}


/**
 * Universal Sentence Encoder Lite on BANKING77 questions: sentences/s on each backend, one wasm
 * thread against a pool of worker threads, and warm Classify latency for one sentence.
 */
async function benchText(seconds: number, log: (line: string) => void) {
	const examples = readTextDataset(path.join(DATA_DIR, 'text', 'banking77_10intents', 'banking77_10intents.csv'));
	const texts = examples.map((e) => e.text);
	const spec = catalogBackbone(USE_LITE_ID, 'text');
	let next = 0;
	const slice = (count: number) => Array.from({ length: count }, () => texts[next++ % texts.length]);
	log(`\n${USE_LITE_ID} on BANKING77 (${texts.length} texts, mean ${Math.round(texts.reduce((n, t) => n + t.length, 0) / texts.length)} characters)`);
	const encoders: { encoder: TextEncoder; backend: string; workers: number; budget: number }[] = [];
	for (const choice of ['wasm', 'cpu'] as const) {
		const encoder = await UseLiteEncoder.load(spec, { backend: choice }).catch(() => undefined);
		if (!encoder || encoder.backendName !== choice) {
			encoder?.dispose();
			log(`  ${choice}: not available`);
			continue;
		}
		encoders.push({ encoder, backend: choice, workers: 0, budget: choice === 'cpu' ? Math.min(seconds, 1) : seconds });
	}
	// One worker, the size nodes use on this machine, and one per core.
	for (const size of [...new Set([1, UseLitePool.defaultSize(), availableParallelism()])].sort((a, b) => a - b)) {
		encoders.push({ encoder: await UseLitePool.load(spec, { size, backend: 'wasm' }), backend: 'wasm', workers: size, budget: seconds });
	}
	const runs = encoders.flatMap((e) => [1, 32].map((batch) => ({ ...e, batch, sentences: 0, ms: 0 })));
	for (const run of runs) await run.encoder.embed(slice(run.batch)); // warm-up
	// Each row a third of its time in each round, in turn: a change in this machine's load falls on every row alike.
	const ROUNDS = 3;
	for (let round = 0; round < ROUNDS; round++) {
		for (const run of runs) {
			const started = performance.now();
			do {
				await run.encoder.embed(slice(run.batch));
				run.sentences += run.batch;
			} while (performance.now() - started < (run.budget * 1000) / ROUNDS);
			run.ms += performance.now() - started;
		}
	}
	for (const { encoder } of encoders) encoder.dispose();
	const results: TextRow[] = runs.map((run) => ({
		inputType: 'text',
		backbone: USE_LITE_ID,
		backend: run.backend,
		workers: run.workers,
		batch: run.batch,
		sentencesPerSecond: run.sentences / (run.ms / 1000),
		ratioToBaseline: NaN,
	}));
	const baseline = results.find((r) => r.backend === 'wasm' && r.workers === 0 && r.batch === 32)!.sentencesPerSecond;
	for (const row of results) {
		row.ratioToBaseline = row.sentencesPerSecond / baseline;
		const where = row.workers ? `${row.backend} x${row.workers} workers` : row.backend;
		log(`  ${where.padEnd(17)} batch ${String(row.batch).padStart(2)} ${row.sentencesPerSecond.toFixed(1).padStart(7)} sentences/s  ${row.ratioToBaseline.toFixed(2).padStart(6)}x`);
	}

	// Classify one sentence, warm: tokenise + encode (on the nodes' worker) + head, as the Classify node does it.
	const encoder = await loadTextEncoder(spec, { backend: 'wasm' });
	const train = examples.filter((e) => e.split === 'train');
	const features = (await embedTexts(encoder, train.map((e) => e.text))).map((v) => l2Normalize(v as Float32Array));
	const { head } = await trainHead(features, train.map((e) => e.label));
	const classifyOne = async () => {
		const [vector] = await embedTexts(encoder, slice(1));
		return classify(head, [l2Normalize(vector as Float32Array)]);
	};
	for (let i = 0; i < 10; i++) await classifyOne();
	const latencies: number[] = [];
	const started = performance.now();
	while (latencies.length < 20 || performance.now() - started < seconds * 1000) {
		const one = performance.now();
		await classifyOne();
		latencies.push(performance.now() - one);
	}
	const classifyTextLatencyMs = { p50: percentile(latencies, 50), p99: percentile(latencies, 99), samples: latencies.length };
	log(`Classify one sentence (${USE_LITE_ID}, wasm x${UseLitePool.defaultSize()} workers, warm): p50 ${classifyTextLatencyMs.p50.toFixed(2)} ms, p99 ${classifyTextLatencyMs.p99.toFixed(2)} ms (${latencies.length} runs)`);
	return { results, classifyTextLatencyMs };
}

async function main() {
	const { values } = parseArgs({
		options: {
			json: { type: 'boolean', default: false },
			quick: { type: 'boolean', default: false },
			'synthetic-mobilenet-v2-1.0': { type: 'boolean', default: false },
			'text-only': { type: 'boolean', default: false },
		},
	});
	const seconds = values.quick ? 0.5 : 2;
	const log = (line: string) => {
		if (!values.json) console.log(line);
	};
	const text = await benchText(seconds, log);
	if (values['text-only']) {
		if (values.json) console.log(JSON.stringify({ results: text.results, classifyTextLatencyMs: text.classifyTextLatencyMs }));
		return;
	}
	const flowers = readDataset(path.join(DATA_DIR, 'image_datasets', 'flowers5'));
	const jpegs = flowers.map((e) => readFileSync(e.file));
	const results: (ImageRow | TextRow)[] = [...text.results];
	const available = new Set<string>();

	const candidates = BACKBONES.map((id) => {
		const spec = catalogBackbone(id);
		return { spec, load: (options: BackboneLoadOptions) => Backbone.load(spec, options) };
	});
	if (values['synthetic-mobilenet-v2-1.0']) {
		const { spec, artifacts } = await syntheticMobileNetV2();
		candidates.push({ spec, load: (options) => Backbone.fromArtifacts(spec, artifacts, options) });
	}
	for (const { spec, load } of candidates) {
		const id = spec.id;
		const { height, width } = spec.inputSize;
		const calibration = await Promise.all(jpegs.slice(0, 16).map((j) => decodeImage(j, spec.inputSize, 'centreCrop', 50_000_000)));
		// Baseline: the layers model as TF.js loads it, predict on wasm, batch 16.
		const plain = await load({ backend: 'wasm', compile: false });
		const images16 = Array.from({ length: 16 }, () => new Uint8Array(height * width * 3).fill(128));
		const baseline = await rate(16, () => plain.extract(images16), seconds);
		plain.dispose();
		log(`\n${id}: baseline (layers model, wasm, batch 16) ${baseline.toFixed(1)} images/s`);
		for (const choice of BACKENDS) {
			// ONNX Runtime runs both precisions, measured in turns (best of ROUNDS each) so that
			// a burst of load elsewhere on the machine does not land on one of them only.
			const loaded: { precision: Precision; backbone: Backbone }[] = [];
			for (const precision of choice === 'onnxruntime' ? (['float32', 'int8'] as const) : (['float32'] as const)) {
				const backbone = await load({ backend: choice, precision }).catch(() => undefined);
				if (!backbone || backbone.backend.name !== choice) {
					backbone?.dispose();
					log(`  ${choice}: not available${backbone?.backend.fallbackReason ? ` (${backbone.backend.fallbackReason})` : ''}`);
					break;
				}
				// The first batch calibrates int8 (and checks it against float32): real photos, not grey.
				await backbone.extract(calibration);
				if (backbone.precision !== precision) throw new Error(`${id} ran in ${backbone.precision}, not ${precision}`);
				if (backbone.parity) log(`  int8 calibrated on ${backbone.parity.calibrationImages} photos (${backbone.parity.calibration}); mean cosine to float32 ${backbone.parity.meanCosine.toFixed(3)}`);
				loaded.push({ precision, backbone });
			}
			if (!loaded.length) continue;
			available.add(choice);
			// The plain-JS backend is ~100x slower: a shorter run says as much.
			const budget = choice === 'cpu' ? Math.min(seconds, 1) : seconds;
			const rounds = loaded.length > 1 ? ROUNDS : 1;
			for (const batch of [1, 16]) {
				const images = Array.from({ length: batch }, () => new Uint8Array(height * width * 3).fill(128));
				const sliceSize = choice === 'cpu' ? batch : Math.max(batch, 64);
				let next = 0;
				const modes = {
					'model-only': (backbone: Backbone) => rate(batch, () => backbone.extract(images), budget / rounds),
					'end-to-end': (backbone: Backbone) =>
						rate(
							sliceSize,
							() => extractFeatures(backbone, Array.from({ length: sliceSize }, () => jpegs[next++ % jpegs.length]), { batchSize: batch }),
							budget / rounds,
						),
				};
				for (const mode of ['model-only', 'end-to-end'] as const) {
					const best = new Map<Precision, number>();
					for (let round = 0; round < rounds; round++) {
						for (const { precision, backbone } of loaded) best.set(precision, Math.max(best.get(precision) ?? 0, await modes[mode](backbone)));
					}
					for (const [precision, value] of best) {
						const ratioToFloat32 = precision === 'int8' ? value / best.get('float32')! : undefined;
						results.push({ inputType: 'image', backbone: id, backend: choice, batch, mode, precision, imagesPerSecond: value, ratioToBaseline: value / baseline, ...(ratioToFloat32 ? { ratioToFloat32 } : {}) });
						log(
							`  ${`${choice} ${precision}`.padEnd(19)} batch ${String(batch).padStart(2)} ${mode.padEnd(10)} ${value.toFixed(1).padStart(7)} images/s  ${(value / baseline).toFixed(2).padStart(6)}x` +
								(ratioToFloat32 ? `  ${ratioToFloat32.toFixed(2)}x float32` : ''),
						);
					}
				}
			}
			loaded.forEach(({ backbone }) => backbone.dispose());
		}
	}

	// Classify: one webhook image at a time, warm, with the best backend, MobileNet v1 0.75, in each
	// precision it runs (the head trained on features of the same precision, as Fine-Tune Head does).
	const best = BACKENDS.find((b) => available.has(b))!;
	const train = flowers.filter((e) => e.split === 'train');
	const trainBytes = train.map((e) => readFileSync(e.file));
	const classifyLatencyMs: Partial<Record<Precision, { p50: number; p99: number }>> = {};
	let classifier: Backbone | undefined;
	let classifyOne: (i: number) => Promise<unknown> = async () => {};
	for (const precision of best === 'onnxruntime' ? (['int8', 'float32'] as const) : (['float32'] as const)) {
		classifier?.dispose();
		const backbone = await Backbone.load(catalogBackbone('mobilenet_v1_0.75_224'), { backend: best, precision });
		classifier = backbone;
		const trainFeatures = (await extractFeatures(backbone, trainBytes)) as Float32Array[];
		const { head } = await trainHead(trainFeatures, train.map((e) => e.label));
		classifyOne = async (i: number) => {
			const [features] = (await extractFeatures(backbone, [jpegs[i % jpegs.length]])) as Float32Array[];
			return classify(head, [features]);
		};
		for (let i = 0; i < 20; i++) await classifyOne(i);
		const latencies: number[] = [];
		for (let i = 0; i < 300; i++) {
			const started = performance.now();
			await classifyOne(i);
			latencies.push(performance.now() - started);
		}
		classifyLatencyMs[precision] = { p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
		log(`\nClassify one image (mobilenet_v1_0.75_224, ${best}, ${precision}, warm): p50 ${classifyLatencyMs[precision]!.p50.toFixed(2)} ms, p99 ${classifyLatencyMs[precision]!.p99.toFixed(2)} ms`);
	}

	// Memory over 1000 classifications: TF.js tensors must not grow; RSS is reported.
	const tensorsBefore = tf.memory().numTensors;
	const rssBefore = process.memoryUsage().rss;
	for (let i = 0; i < 1000; i++) await classifyOne(i);
	const tensorsAfter1000 = tf.memory().numTensors - tensorsBefore;
	const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 1e6;
	log(`1000 classifications: tensor count change ${tensorsAfter1000}, RSS change ${rssGrowthMb.toFixed(1)} MB`);
	classifier!.dispose();

	// Head training: 1000 real 1280-d features (flowers5 through MobileNetV2 0.35: the photos,
	// their mirror images and 200 centre crops), 5 classes, default options.
	const v2 = await Backbone.load(catalogBackbone('mobilenet_v2_0.35_224'), { backend: best, precision: 'float32' });
	const flipped = await Promise.all(jpegs.map((j) => sharp(j).flop().jpeg().toBuffer()));
	const cropped = await Promise.all(
		jpegs.slice(0, 200).map(async (j) => {
			const { width = 0, height = 0 } = await sharp(j).metadata();
			return sharp(j).extract({ left: Math.floor(width * 0.1), top: Math.floor(height * 0.1), width: Math.floor(width * 0.8), height: Math.floor(height * 0.8) }).jpeg().toBuffer();
		}),
	);
	const headFeatures = (await extractFeatures(v2, [...jpegs, ...flipped, ...cropped])) as Float32Array[];
	const headLabels = [...flowers, ...flowers, ...flowers.slice(0, 200)].map((e) => e.label);
	v2.dispose();
	await useBackend();
	await trainHead(headFeatures.slice(0, 100), headLabels.slice(0, 100), { epochs: 2 }); // warm-up
	// The full-batch solver (its products on ONNX Runtime, and on the JS kernels as where ONNX Runtime
	// does not load) against the mini-batch trainer it replaced for linear heads, alternated three
	// times so that a burst of load on the machine hits all three: medians, and their ratios.
	type HeadRun = 'auto' | 'js' | 'miniBatch';
	const runs: Record<HeadRun, { solver: 'auto' | 'miniBatch'; backend?: BackendChoice }> = { auto: { solver: 'auto' }, js: { solver: 'auto', backend: 'cpu' }, miniBatch: { solver: 'miniBatch' } };
	const timings: Record<HeadRun, number[]> = { auto: [], js: [], miniBatch: [] };
	const heads: Partial<Record<HeadRun, Awaited<ReturnType<typeof trainHead>>>> = {};
	for (let round = 0; round < 3; round++) {
		for (const name of Object.keys(runs) as HeadRun[]) {
			const { solver, backend } = runs[name];
			// The training worker reads TL_BACKEND as it starts: cpu keeps the solver's products in JS.
			const before = process.env.TL_BACKEND;
			if (backend) process.env.TL_BACKEND = backend;
			const trainStarted = performance.now();
			try {
				heads[name] = await trainHead(headFeatures, headLabels, { solver });
			} finally {
				if (before === undefined) delete process.env.TL_BACKEND;
				else process.env.TL_BACKEND = before;
			}
			timings[name].push((performance.now() - trainStarted) / 1000);
		}
	}
	const headTrainSeconds = percentile(timings.auto, 50);
	const headTrainJsSeconds = percentile(timings.js, 50);
	const headTrainMiniBatchSeconds = percentile(timings.miniBatch, 50);
	const { solver } = heads.auto!;
	const chosen = solver.method === 'lbfgs' ? `L2 ${solver.l2}${solver.l2Normalize ? ', unit-length inputs' : ''}, products on ${solver.runtime}` : solver.method;
	log(
		`Head training, 1000 x 1280 features, 5 classes: full-batch ${headTrainSeconds.toFixed(2)} s (${chosen}, validation accuracy ${heads.auto!.metrics.accuracy.toFixed(3)}), ` +
			`mini-batch ${headTrainMiniBatchSeconds.toFixed(2)} s (validation accuracy ${heads.miniBatch!.metrics.accuracy.toFixed(3)}): ${(headTrainSeconds / headTrainMiniBatchSeconds).toFixed(2)}x the time`,
	);
	log(
		`  full-batch with its products on the JS kernels (where ONNX Runtime does not load) ${headTrainJsSeconds.toFixed(2)} s (validation accuracy ${heads.js!.metrics.accuracy.toFixed(3)}): ` +
			`the full-batch row takes ${(headTrainSeconds / headTrainJsSeconds).toFixed(2)}x its time`,
	);

	const peakRssMb = process.resourceUsage().maxRSS / 1024;
	log(`Peak RSS ${peakRssMb.toFixed(0)} MB`);
	const summary = { results, classifyLatencyMs, classifyTextLatencyMs: text.classifyTextLatencyMs, headTrainSeconds, headTrainMiniBatchSeconds, headTrainRatio: headTrainSeconds / headTrainMiniBatchSeconds, headTrainJsSeconds, headTrainJsRatio: headTrainSeconds / headTrainJsSeconds, peakRssMb, tensorsAfter1000, rssGrowthMb };
	if (values.json) console.log(JSON.stringify(summary));
}

main().catch((error) => {
	console.error(error instanceof Error ? error.stack : error);
	process.exit(1);
});
