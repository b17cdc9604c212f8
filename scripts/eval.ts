/**
 * Trains a head on a dataset's `train` split and scores it on its `test` split.
 *   npm run eval -- --data DIR --backbone ID [--json] [--backend auto|wasm|cpu] [--precision auto|float32|int8] [--hidden N]
 *     [--seed S] [--seeds N] [--per-class N] [--augment] [--tta] [--solver auto|miniBatch] [--input-size N] [--pooling average|gem]
 *     [--folds K]
 * With --seeds N it trains N heads (seeds S, S+1, ...) on features extracted once, and reports the
 * mean and spread: one run's figure moves by an image or two with the seed. --per-class N trains
 * each seed on another N images per class of the train split. --augment trains on every view of
 * each training image (IMAGE_VIEWS: flip and corner crops), --tta classifies each test image by
 * the average over its views. --input-size and --pooling read the images otherwise than the
 * catalog does for new models (224 and average: what models saved before that default read). --folds K
 * adds K-fold cross-validation over every image of both splits, once per seed (stratified folds
 * shuffled by the seed): three times the images behind the figure, to choose settings by rather
 * than by the test split alone. With --json the last line printed is one JSON object (other checks
 * parse it). A .csv of texts (`text,label,split`) goes to eval-text.ts, which adds a TF-IDF baseline.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { catalogBackbone, DEFAULT_BACKBONE, type ImageBackboneSpec } from '../engine/backbones/catalog';
import { extractFeatures, loadBackbone } from '../engine/backbones/features';
import { argMax, predictHead, trainHead, type TrainingOptions } from '../engine/head/head';
import { computeMetrics } from '../engine/head/metrics';
import { seededRandom, shuffleInPlace } from '../engine/head/random';
import type { BackendChoice, PrecisionChoice } from '../engine/settings';
import { averageProbabilities, extractViewFeatures } from '../engine/inputs/views';
import { readDataset, type LabelledImage } from './dataset';
import { describeSpread, mean, seedsOf, summarise } from './eval-seeds';
import { evalText } from './eval-text';
import { samplePerClass } from './text-dataset';

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
			augment: { type: 'boolean', default: false },
			tta: { type: 'boolean', default: false },
			solver: { type: 'string', default: 'auto' },
			'input-size': { type: 'string' },
			pooling: { type: 'string' },
			folds: { type: 'string' },
		},
	});
	if (!values.data) throw new Error('usage: npm run eval -- --data DIR|FILE.csv --backbone ID [--json]');
	if (values.data.endsWith('.csv')) return evalText({ ...values, data: values.data, perClass: values['per-class'] });
	const examples = readDataset(values.data);
	const train = examples.filter((e) => e.split === 'train');
	const test = examples.filter((e) => e.split === 'test');
	if (values.precision && !['auto', 'float32', 'int8'].includes(values.precision)) throw new Error('--precision must be auto, float32 or int8');
	if (values.pooling && !['average', 'gem'].includes(values.pooling)) throw new Error('--pooling must be average or gem');
	const { pooling: catalogPooling, ...catalogSpec } = catalogBackbone(values.backbone!);
	const side = values['input-size'] ? Number(values['input-size']) : undefined;
	const pooling = values.pooling ?? catalogPooling ?? 'average';
	const spec: ImageBackboneSpec = {
		...catalogSpec,
		...(side ? { inputSize: { height: side, width: side } } : {}),
		...(pooling === 'gem' ? { pooling: 'gem' } : {}),
	};
	const backbone = await loadBackbone(spec, { backend: values.backend as BackendChoice | undefined, precision: values.precision as PrecisionChoice | undefined });
	const started = Date.now();
	const must = <T>(set: LabelledImage[], results: (T | Error)[]) =>
		results.map((r, i) => {
			if (r instanceof Error) throw new Error(`${set[i].file}: ${r.message}`);
			return r;
		});
	// Every view of a set when it needs them (its first view is the plain image), else the plain image only.
	const featuresOf = async (set: LabelledImage[], views: boolean): Promise<Float32Array[][]> => {
		const bytes = set.map((e) => readFileSync(e.file));
		return views ? must(set, await extractViewFeatures(backbone, bytes)) : must(set, await extractFeatures(backbone, bytes)).map((f) => [f]);
	};
	const trainViews = new Map(zip(train, await featuresOf(train, values.augment)));
	const testViews = await featuresOf(test, values.tta);
	const extractSeconds = (Date.now() - started) / 1000;
	const viewCount = [...trainViews.values()][0].length * train.length + testViews[0].length * test.length;

	const options: Partial<TrainingOptions> = { hiddenUnits: Number(values.hidden), solver: values.solver as TrainingOptions['solver'] };
	const runs = [];
	for (const seed of seedsOf(values)) {
		const subset = values['per-class'] ? samplePerClass(train, Number(values['per-class']), seededRandom(seed)) : train;
		const views = subset.map((e) => trainViews.get(e)!);
		const trainStarted = performance.now();
		const trained = await trainHead(
			views.map((v) => v[0]),
			subset.map((e) => e.label),
			{ ...options, seed },
			undefined,
			values.augment ? views.map((v) => v.slice(1)) : undefined,
		);
		const trainSeconds = (performance.now() - trainStarted) / 1000;
		const labels = trained.head.labels;
		const predicted = testViews.map((v) => argMax(averageProbabilities(predictHead(trained.head, v))));
		const metrics = computeMetrics(labels, test.map((e) => labels.indexOf(e.label)), predicted);
		runs.push({
			seed,
			trainCount: subset.length,
			accuracy: metrics.accuracy,
			macroF1: metrics.macroF1,
			validationAccuracy: trained.metrics.accuracy,
			bestEpoch: trained.bestEpoch,
			solver: trained.solver.method === 'lbfgs' ? { l2: trained.solver.l2, l2Normalize: trained.solver.l2Normalize } : trained.solver.method,
			trainSeconds,
		});
	}
	const folds = values.folds ? Number(values.folds) : undefined;
	if (folds !== undefined && (!Number.isInteger(folds) || folds < 2)) throw new Error('--folds must be a whole number of at least 2');
	const everyImage = [...train.map((e) => trainViews.get(e)![0]), ...testViews.map((v) => v[0])];
	const crossValidation = folds && (await crossValidate(everyImage, [...train, ...test].map((e) => e.label), folds, seedsOf(values), options));
	const result = {
		dataset: values.data,
		backbone: backbone.spec.id,
		inputSize: backbone.spec.inputSize.width,
		pooling,
		backend: backbone.backend.name,
		/** What ran, after Automatic chose; int8 says how it was calibrated and how close to float32 it came on the first batch. */
		precision: backbone.precision,
		...(backbone.parity ? { int8Parity: backbone.parity } : {}),
		solver: values.solver,
		augment: values.augment,
		tta: values.tta,
		perClass: values['per-class'] ? Number(values['per-class']) : undefined,
		...(crossValidation ? { crossValidation } : {}),
		/** Means over the seeds. */
		...summarise(runs),
		runs,
		trainCount: runs[0].trainCount,
		testCount: test.length,
		trainSeconds: mean(runs.map((r) => r.trainSeconds)),
		extractSeconds,
		/** Network passes (one per image and view) per second. */
		imagesPerSecond: viewCount / extractSeconds,
	};
	if (!values.json) {
		const setting = [values.augment && 'augmented', values.tta && 'test-time averaged', values['per-class'] && `${values['per-class']} per class`].filter(Boolean).join(', ');
		console.log(`${result.backbone} at ${result.inputSize}x${result.inputSize}, ${pooling} pooling, on ${result.dataset} (${result.backend}, ${result.precision}${setting ? `, ${setting}` : ''}): ${describeSpread(result, runs.length)}`);
		for (const r of runs) console.log(`  seed ${r.seed}: accuracy ${r.accuracy.toFixed(3)}, macro-F1 ${r.macroF1.toFixed(3)}, best epoch ${r.bestEpoch}, solver ${JSON.stringify(r.solver)}, ${r.trainSeconds.toFixed(2)} s`);
		if (crossValidation) console.log(`${folds}-fold cross-validation over all ${everyImage.length} images: ${describeSpread(crossValidation, crossValidation.runs.length)}`);
		console.log(`train ${result.trainCount}, test ${result.testCount}, ${result.imagesPerSecond.toFixed(1)} images/s`);
	}
	console.log(JSON.stringify(result));
}

/** Per seed: each image scored once, by a head trained on the folds it is not in. */
async function crossValidate(features: Float32Array[], labels: string[], folds: number, seeds: number[], options: Partial<TrainingOptions>) {
	const runs = [];
	for (const seed of seeds) {
		const order = shuffleInPlace(labels.map((_, i) => i), seededRandom(seed));
		const fold = new Array<number>(labels.length);
		const seen = new Map<string, number>();
		for (const i of order) {
			fold[i] = (seen.get(labels[i]) ?? 0) % folds;
			seen.set(labels[i], fold[i] + 1);
		}
		const truth: number[] = [];
		const predicted: number[] = [];
		const classes = [...new Set(labels)].sort();
		for (let f = 0; f < folds; f++) {
			const fit = order.filter((i) => fold[i] !== f);
			const held = order.filter((i) => fold[i] === f);
			const { head } = await trainHead(fit.map((i) => features[i]), fit.map((i) => labels[i]), { ...options, seed });
			predictHead(head, held.map((i) => features[i])).forEach((p, j) => {
				truth.push(classes.indexOf(labels[held[j]]));
				predicted.push(classes.indexOf(head.labels[argMax(p)]));
			});
		}
		const metrics = computeMetrics(classes, truth, predicted);
		runs.push({ seed, accuracy: metrics.accuracy, macroF1: metrics.macroF1 });
	}
	return { folds, images: labels.length, ...summarise(runs), runs };
}

const zip = <A, B>(a: A[], b: B[]): [A, B][] => a.map((x, i) => [x, b[i]]);

main().catch((error) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
