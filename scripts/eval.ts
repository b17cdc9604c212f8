/**
 * Trains a head on a dataset's `train` split and scores it on its `test` split.
 *   npm run eval -- --data DIR --backbone ID [--json] [--backend auto|wasm|cpu] [--hidden N]
 * With --json the last line printed is one JSON object (other checks parse it).
 * A .csv of texts (`text,label,split`) goes to eval-text.ts, which adds a TF-IDF baseline.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { catalogBackbone, DEFAULT_BACKBONE } from '../engine/catalog';
import { extractFeatures, loadBackbone } from '../engine/features';
import { argMax, predictHead, trainHead } from '../engine/head';
import { computeMetrics } from '../engine/metrics';
import type { BackendChoice } from '../engine/settings';
import { readDataset } from './dataset';
import { evalText } from './eval-text';

async function main() {
	const { values } = parseArgs({
		options: {
			data: { type: 'string' },
			backbone: { type: 'string', default: DEFAULT_BACKBONE },
			backend: { type: 'string' },
			hidden: { type: 'string', default: '0' },
			seed: { type: 'string', default: '42' },
			json: { type: 'boolean', default: false },
			seeds: { type: 'string', default: '1' },
			'per-class': { type: 'string' },
		},
	});
	if (!values.data) throw new Error('usage: npm run eval -- --data DIR|FILE.csv --backbone ID [--json]');
	if (values.data.endsWith('.csv')) return evalText({ ...values, data: values.data, perClass: values['per-class'] });
	const examples = readDataset(values.data);
	const train = examples.filter((e) => e.split === 'train');
	const test = examples.filter((e) => e.split === 'test');
	const backbone = await loadBackbone(catalogBackbone(values.backbone!), { backend: values.backend as BackendChoice | undefined });
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
	const trained = await trainHead(trainFeatures, train.map((e) => e.label), { hiddenUnits: Number(values.hidden), seed: Number(values.seed) }, values.backend as BackendChoice | undefined);
	const labels = trained.head.labels;
	const predicted = predictHead(trained.head, testFeatures).map(argMax);
	const metrics = computeMetrics(labels, test.map((e) => labels.indexOf(e.label)), predicted);
	const result = {
		dataset: values.data,
		backbone: backbone.spec.id,
		backend: backbone.backend.name,
		accuracy: metrics.accuracy,
		macroF1: metrics.macroF1,
		trainCount: train.length,
		testCount: test.length,
		validationAccuracy: trained.metrics.accuracy,
		bestEpoch: trained.bestEpoch,
		extractSeconds,
		imagesPerSecond: (train.length + test.length) / extractSeconds,
	};
	if (!values.json) {
		console.log(`${result.backbone} on ${result.dataset} (${result.backend}): accuracy ${metrics.accuracy.toFixed(3)}, macro-F1 ${metrics.macroF1.toFixed(3)}`);
		console.log(`train ${result.trainCount}, test ${result.testCount}, best epoch ${result.bestEpoch}, ${result.imagesPerSecond.toFixed(1)} images/s`);
	}
	console.log(JSON.stringify(result));
}

main().catch((error) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
