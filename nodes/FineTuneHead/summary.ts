import type { IDataObject } from 'n8n-workflow';
import type { ModelManifest } from '../../engine';

/** Scores are shares measured on tens or hundreds of examples: four decimals say all they can. */
const round = (value: number | undefined, digits = 4) => (value === undefined ? undefined : Number(value.toFixed(digits)));

/**
 * Fine-Tune Head's output item: a short summary first (what was saved, how good it is, on what),
 * then the details keyed by class name. The epoch-by-epoch history only when asked for: it makes
 * the row tall and the report picture shows it as curves.
 */
export function trainingSummary(manifest: ModelManifest, options: { modelFile?: string; includeHistory: boolean; skippedItems: number[] }): IDataObject {
	const { metrics, history } = manifest;
	const last = history[history.length - 1];
	const best = history.find((h) => h.epoch === manifest.bestEpoch) ?? last;
	const examples = Object.values(manifest.examplesPerClass).reduce((n, c) => n + c, 0);
	const epoch = (h: typeof last) =>
		h && {
			epoch: h.epoch,
			loss: round(h.loss),
			accuracy: round(h.accuracy),
			...(h.validationLoss === undefined ? {} : { validationLoss: round(h.validationLoss), validationAccuracy: round(h.validationAccuracy) }),
		};
	return {
		modelName: manifest.name,
		version: manifest.version,
		savedAs: `model "${manifest.name}" version ${manifest.version} in the model store${options.modelFile ? `, and as a file in binary property "${options.modelFile}"` : ''}`,
		accuracy: round(metrics.accuracy),
		macroF1: round(metrics.macroF1),
		evaluatedOn: manifest.evaluatedOn,
		examples,
		labels: manifest.labels,
		backbone: manifest.backbone.id,
		...(manifest.precision ? { precision: manifest.precision } : {}),
		...(manifest.solver?.method === 'lbfgs' ? { solver: { method: 'lbfgs', l2: manifest.solver.l2, unitLengthInputs: manifest.solver.l2Normalize } } : {}),
		...(manifest.augmentation ? { augmentation: manifest.augmentation as unknown as IDataObject } : {}),
		createdAt: manifest.createdAt,
		...(options.skippedItems.length ? { skippedItems: options.skippedItems } : {}),
		examplesPerClass: manifest.examplesPerClass,
		perClass: Object.fromEntries(
			metrics.perClass.map((c) => [c.label, { precision: round(c.precision), recall: round(c.recall), f1: round(c.f1), support: c.support }]),
		),
		// confusionMatrix[true class][predicted class]: how many of the evaluated examples went where.
		confusionMatrix: Object.fromEntries(metrics.labels.map((actual, a) => [actual, Object.fromEntries(metrics.labels.map((predicted, p) => [predicted, metrics.confusionMatrix[a][p]]))])),
		training: {
			trainCount: manifest.trainCount,
			validationCount: manifest.validationCount,
			epochsRun: history.length,
			bestEpoch: manifest.bestEpoch,
			best: epoch(best),
			last: epoch(last),
			finalTrainCount: manifest.finalTrainCount,
			finalEpochs: manifest.finalEpochs,
		},
		...(options.includeHistory ? { history: history.map((h) => epoch(h)!) } : {}),
	} as IDataObject;
}
