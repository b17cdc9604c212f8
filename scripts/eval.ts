/**
 * Trains a head on a dataset's `train` split and scores it on its `test` split.
 *   npm run eval -- --data DIR --backbone ID [--json] [--backend auto|wasm|cpu] [--precision auto|float32|int8] [--hidden N] [--seed S] [--seeds N]
 * With --seeds N it trains N heads (seeds S, S+1, ...) on features extracted once, and reports the
 * mean and spread: one run's figure moves by an image or two with the seed.
 * With --json the last line printed is one JSON object (other checks parse it).
 * A .csv of texts (`text,label,split`) goes to eval-text.ts, which adds a TF-IDF baseline.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { catalogBackbone, DEFAULT_BACKBONE } from '../engine/catalog';
import { extractFeatures, loadBackbone } from '../engine/features';
import { argMax, predictHead, trainHead } from '../engine/head';
import { computeMetrics } from '../engine/metrics';
import type { BackendChoice, PrecisionChoice } from '../engine/settings';
import { readDataset } from './dataset';
import { evalText } from './eval-text';

async function main() {
	const { values } = parseArgs({
		options: {
			data: { type: 'string' },
			backbone: { type: 'string', default: DEFAULT_BACKBONE },
			backend: { type: 'string' },
			precision: { type: 'string' },
			hidden: { type: 'string', default: '0' },
			seed: { type: 'string', default: '42' },
			seeds: { type: 'string', default: '1' },
			json: { type: 'boolean', default: false },
			'per-class': { type: 'string' },
		},
	});
	if (!values.data) throw new Error('usage: npm run eval -- --data DIR|FILE.csv --backbone ID [--json]');
	if (values.data.endsWith('.csv')) return evalText({ ...values, data: values.data, perClass: values['per-class'] });
	const examples = readDataset(values.data);
	const train = examples.filter((e) => e.split === 'train');
	const test = examples.filter((e) => e.split === 'test');
	if (values.precision && !['auto', 'float32', 'int8'].includes(values.precision)) throw new Error('--precision must be auto, float32 or int8');
	const backbone = await loadBackbone(catalogBackbone(values.backbone!), { backend: values.backend as BackendChoice | undefined, precision: values.precision as PrecisionChoice | undefined });
	const started = Date.now();
	const featuresOf = async (set: typeof examples) => {
		const results = await extractFeatures(backbone, set.map((e) => readFileSync(e.file)));
		return results.map((r, i) => {
			if (r instanceof Error) throw new Error(`${set[i].file}: ${r.message}`);
			return r;
		});
	};
	const trainFeatures = await featuresOf(train);
	const testFeatures = await featuresOf(test);
	const extractSeconds = (Date.now() - started) / 1000;
	const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => Number(values.seed) + i);
	const runs = [];
	for (const seed of seeds) {
		const trained = await trainHead(trainFeatures, train.map((e) => e.label), { hiddenUnits: Number(values.hidden), seed });
		const labels = trained.head.labels;
		const predicted = predictHead(trained.head, testFeatures).map(argMax);
		const metrics = computeMetrics(labels, test.map((e) => labels.indexOf(e.label)), predicted);
		runs.push({ seed, accuracy: metrics.accuracy, macroF1: metrics.macroF1, validationAccuracy: trained.metrics.accuracy, bestEpoch: trained.bestEpoch });
	}
	const accuracies = runs.map((r) => r.accuracy);
	const result = {
		dataset: values.data,
		backbone: backbone.spec.id,
		backend: backbone.backend.name,
		/** What ran, after Automatic chose; int8 says how it was calibrated and how close to float32 it came on the first batch. */
		precision: backbone.precision,
		...(backbone.parity ? { int8Parity: backbone.parity } : {}),
		/** Means over the seeds. */
		accuracy: mean(accuracies),
		macroF1: mean(runs.map((r) => r.macroF1)),
		accuracySpread: { min: Math.min(...accuracies), max: Math.max(...accuracies), std: Math.sqrt(mean(accuracies.map((a) => (a - mean(accuracies)) ** 2))) },
		runs,
		trainCount: train.length,
		testCount: test.length,
		extractSeconds,
		imagesPerSecond: (train.length + test.length) / extractSeconds,
	};
	if (!values.json) {
		const { min, max, std } = result.accuracySpread;
		console.log(`${result.backbone} on ${result.dataset} (${result.backend}, ${result.precision}): accuracy ${result.accuracy.toFixed(3)} (${runs.length} seeds: min ${min.toFixed(3)}, max ${max.toFixed(3)}, sd ${std.toFixed(3)}), macro-F1 ${result.macroF1.toFixed(3)}`);
		for (const r of runs) console.log(`  seed ${r.seed}: accuracy ${r.accuracy.toFixed(3)}, macro-F1 ${r.macroF1.toFixed(3)}, best epoch ${r.bestEpoch}`);
		console.log(`train ${result.trainCount}, test ${result.testCount}, ${result.imagesPerSecond.toFixed(1)} images/s`);
	}
	console.log(JSON.stringify(result));
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

main().catch((error) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
