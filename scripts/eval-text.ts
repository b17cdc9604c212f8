/**
 * eval.ts for a CSV of texts (`text,label,split`): the head on the text backbone's features beside
 * the same head on TF-IDF features of the same split (`baselineAccuracy`).
 *   npm run eval -- --data FILE.csv --backbone universal_sentence_encoder_lite [--json] [--per-class N] [--seed S] [--seeds N]
 * With --per-class N each seed trains on another N examples per class; figures are means over the seeds.
 */
import { catalogBackbone, DEFAULT_TEXT_BACKBONE } from '../engine/backbones/catalog';
import { argMax, predictHead, trainHead } from '../engine/head/head';
import { computeMetrics } from '../engine/head/metrics';
import { seededRandom } from '../engine/head/random';
import type { BackendChoice } from '../engine/settings';
import { embedTexts, loadTextEncoder } from '../engine/text/encoder';
import { describeSpread, mean, seedsOf, spread, summarise } from './eval-seeds';
import { fitTfidf } from './tfidf';
import { readTextDataset, samplePerClass, type LabelledText } from './text-dataset';

export interface TextEvalArgs {
	data: string;
	backbone?: string;
	backend?: string;
	hidden?: string;
	seed?: string;
	seeds?: string;
	perClass?: string;
	json?: boolean;
}

export async function evalText(args: TextEvalArgs) {
	const examples = readTextDataset(args.data);
	const train = examples.filter((e) => e.split === 'train');
	const test = examples.filter((e) => e.split === 'test');
	const backend = args.backend as BackendChoice | undefined;
	const encoder = await loadTextEncoder(catalogBackbone(args.backbone ?? DEFAULT_TEXT_BACKBONE, 'text'), { backend });
	const started = Date.now();
	const embed = async (set: LabelledText[]) =>
		(await embedTexts(encoder, set.map((e) => e.text))).map((r, i) => {
			if (r instanceof Error) throw new Error(`row "${set[i].text}": ${r.message}`);
			return r;
		});
	const trainFeatures = await embed(train);
	const testFeatures = await embed(test);
	const extractSeconds = (Date.now() - started) / 1000;
	const vectors = new Map<LabelledText, Float32Array>(train.map((e, i) => [e, trainFeatures[i]]));

	const score = async (features: Float32Array[], labels: string[], testSet: Float32Array[], seed: number) => {
		const trained = await trainHead(features, labels, { hiddenUnits: Number(args.hidden ?? 0), seed });
		const classes = trained.head.labels;
		const predicted = predictHead(trained.head, testSet).map(argMax);
		return { trained, metrics: computeMetrics(classes, test.map((e) => classes.indexOf(e.label)), predicted) };
	};
	const runs = [];
	for (const seed of seedsOf(args)) {
		const subset = args.perClass ? samplePerClass(train, Number(args.perClass), seededRandom(seed)) : train;
		const labels = subset.map((e) => e.label);
		const model = await score(subset.map((e) => vectors.get(e)!), labels, testFeatures, seed);
		// The baseline's vocabulary comes from the same training texts only.
		const tfidf = fitTfidf(subset.map((e) => e.text));
		const baseline = await score(subset.map((e) => tfidf(e.text)), labels, test.map((e) => tfidf(e.text)), seed);
		runs.push({ seed, trainCount: subset.length, accuracy: model.metrics.accuracy, macroF1: model.metrics.macroF1, baselineAccuracy: baseline.metrics.accuracy, bestEpoch: model.trained.bestEpoch });
	}
	const result = {
		dataset: args.data,
		backbone: encoder.spec.id,
		backend: encoder.backendName,
		...summarise(runs),
		baselineAccuracy: mean(runs.map((r) => r.baselineAccuracy)),
		baselineSpread: spread(runs.map((r) => r.baselineAccuracy)),
		runs,
		trainCount: runs[0].trainCount,
		testCount: test.length,
		extractSeconds,
		textsPerSecond: (train.length + test.length) / extractSeconds,
	};
	if (!args.json) {
		console.log(`${result.backbone} on ${result.dataset} (${result.backend}): ${describeSpread(result, runs.length)}, TF-IDF ${result.baselineAccuracy.toFixed(3)}`);
		console.log(`train ${result.trainCount}, test ${result.testCount}, ${result.textsPerSecond.toFixed(1)} texts/s`);
	}
	console.log(JSON.stringify(result));
}
