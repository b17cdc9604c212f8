import type { IExecuteFunctions, INodeExecutionData, INodeType } from 'n8n-workflow';
import {
	Backbone,
	describeBackbone,
	describeFeatureSource,
	exportModel,
	featureSourceKey,
	inputTypeOf,
	labelProblem,
	madeWithBackbone,
	ModelStore,
	saveTrainedModel,
	trainHead,
	TransferLearningError,
	UNKNOWN_LABEL,
	type BackendChoice,
	type PrecisionChoice,
	type FeatureSource,
	type ResizeMode,
	type TrainingOptions,
} from '../../engine';
import { n8nFileAccess } from '../shared/files';
import { errorItem, failedItem, featureRequest, gatherFeatures, gatherImageViews, loadExtractor, readBackboneSpec, readEachItem, readFeatureSource, readHostAuth, toNodeError } from '../shared/items';
import { resizeModeOption } from '../shared/parameters';
import { fineTuneHeadDescription } from './FineTuneHeadDescription';
import { trainingReportPng } from './report';
import { trainingSummary } from './summary';

interface Options {
	augmentation?: boolean;
	backend?: BackendChoice;
	precision?: PrecisionChoice;
	batchSize?: number;
	l2Normalize?: boolean;
	outputModelFile?: boolean;
	includeHistory?: boolean;
	modelBinaryProperty?: string;
	resizeMode?: ResizeMode;
}

export class FineTuneHead implements INodeType {
	description = fineTuneHeadDescription;

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const everyItem = items.map((_, i) => i);
		// Items left out of training: under Continue On Fail each becomes an error item beside the model.
		const leftOut = new Map<number, INodeExecutionData>();
		const leaveOut = (error: unknown, i: number) => leftOut.set(i, failedItem(this, error, i));
		const leftOutItems = () => [...leftOut.keys()].sort((a, b) => a - b).map((i) => leftOut.get(i)!);
		try {
			const options = this.getNodeParameter('options', 0, {}) as Options;
			const training = this.getNodeParameter('training', 0, {}) as Partial<TrainingOptions>;
			const inputType = this.getNodeParameter('inputType', 0) as 'image' | 'text' | 'features';
			const modelName = ModelStore.checkName((this.getNodeParameter('modelName', 0) as string).trim());

			const labels = await readEachItem(everyItem, (i) => {
				const raw = this.getNodeParameter('label', i, '') as unknown;
				const label = typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : typeof raw === 'string' ? raw.trim() : '';
				const problem = label ? labelProblem(label) : undefined;
				if (!label) {
					leaveOut(new TransferLearningError('The label is missing or empty', 'Set "Label" to an expression that gives each item its class, e.g. {{ $json.label }}'), i);
				} else if (problem) {
					leaveOut(
						new TransferLearningError(
							`The label "${label.slice(0, 50)}" cannot be used: ${problem}`,
							`Rename that class: labels become Classify's outputs, listed comma-separated in its Class Names, beside its "${UNKNOWN_LABEL}" output for unsure predictions`,
						),
						i,
					);
				}
				return label;
			});
			const l2Normalize = options.l2Normalize ?? false;
			// Read only when needed: features made by a text encoder never consult the image Backbone.
			const configured = (): FeatureSource => ({
				backbone: readBackboneSpec(this, inputType === 'text' ? 'text' : 'image'),
				...(inputType === 'text' ? {} : { resizeMode: options.resizeMode ?? 'centreCrop' }),
				l2Normalize,
			});
			const source =
				inputType === 'features'
					? sourceOfFeatures(this, everyItem.filter((i) => !leftOut.has(i)), configured, l2Normalize, options.resizeMode, leaveOut)
					: configured();
			const labelled = everyItem.filter((i) => !leftOut.has(i));
			const auth = await readHostAuth(this);
			const request = featureRequest(this, inputType, source, options.batchSize);
			let loaded: unknown;
			const extractor = async () => (loaded = await loadExtractor(source.backbone, { auth, backend: options.backend, fileAccess: n8nFileAccess(this), precision: options.precision }));
			// Augmentation needs the images themselves: features from upstream and texts have no views.
			const augment = (options.augmentation ?? false) && inputType === 'image';
			const views = augment ? await gatherImageViews(this, labelled, request, extractor) : undefined;
			const features = views ? views.map((v) => (v instanceof Error ? v : v[0])) : await gatherFeatures(this, labelled, request, extractor);
			const usable: number[] = [];
			features.forEach((f, j) => (f instanceof Error ? leaveOut(f, labelled[j]) : usable.push(j)));

			// n8n's Stop execution: the training stops, and nothing is saved.
			const stopSignal = this.getExecutionCancelSignal?.();
			let lastLog = 0;
			const trained = await trainHead(
				usable.map((j) => features[j] as Float32Array),
				usable.map((j) => labels[labelled[j]]),
				training,
				(p) => {
					// The first epoch of each phase, then at most one line a second.
					if (p.epoch > 1 && Date.now() - lastLog < 1000) return;
					lastLog = Date.now();
					const validation = p.validationLoss === undefined ? '' : `, validation loss ${p.validationLoss.toFixed(4)}, validation accuracy ${p.validationAccuracy!.toFixed(3)}`;
					const phase = p.phase === 'search' ? 'on the training split' : 'on every example (the saved head)';
					if (p.l2 !== undefined) {
						this.logger.info(`Fine-Tune Head "${modelName}": candidate ${p.epoch}/${p.epochs} (L2 ${p.l2}${p.l2Normalize ? ', unit-length inputs' : ''}) ${phase}, loss ${p.loss.toFixed(4)}, accuracy ${p.accuracy.toFixed(3)}${validation}`);
					} else if (p.phase === 'final' && Number.isNaN(p.accuracy)) {
						this.logger.info(`Fine-Tune Head "${modelName}": iteration ${p.epoch} (at most ${p.epochs}) ${phase}, loss ${p.loss.toFixed(4)}`);
					} else {
						this.logger.info(`Fine-Tune Head "${modelName}": epoch ${p.epoch}/${p.epochs} ${phase}, loss ${p.loss.toFixed(4)}, accuracy ${p.accuracy.toFixed(3)}${validation}`);
					}
				},
				views && usable.map((j) => (views[j] as Float32Array[]).slice(1)),
				stopSignal,
			);
			// Stopped while the training ended: a stopped execution saves no version.
			stopSignal?.throwIfAborted();
			// The precision the backbone settled on for these images; Classify will use the same.
			const precision = loaded instanceof Backbone ? loaded.precision : undefined;
			const model = await saveTrainedModel(new ModelStore(), modelName, trained, source.backbone, { ...source, ...(precision ? { precision } : {}) });
			const { manifest } = model;
			const property = options.modelBinaryProperty || 'model';
			const item: INodeExecutionData = {
				json: trainingSummary(manifest, {
					modelFile: options.outputModelFile ? property : undefined,
					includeHistory: options.includeHistory ?? false,
					skippedItems: [...leftOut.keys()].sort((a, b) => a - b),
				}),
				pairedItem: everyItem.map((i) => ({ item: i })),
			};
			item.binary = {
				report: await this.helpers.prepareBinaryData(await trainingReportPng(manifest), `${manifest.name}-v${manifest.version}-report.png`, 'image/png'),
			};
			if (options.outputModelFile) {
				item.binary[property] = await this.helpers.prepareBinaryData(exportModel(model), `${manifest.name}-v${manifest.version}.tlmodel`, 'application/octet-stream');
			}
			return [[item, ...leftOutItems()]];
		} catch (error) {
			if (!this.continueOnFail()) throw toNodeError(this, error);
			// One error item for the run, paired with every input item: n8n adds the first one's fields to
			// it on the error output.
			return [[...leftOutItems(), errorItem(this, error, everyItem.map((i) => ({ item: i })))]];
		}
	}
}

/**
 * How the features fed to the node were made, which the model records so that Classify prepares
 * images the same way. Items made differently from most of them are left out; the node's own
 * Backbone, and Resize Mode when set, must agree with the rest.
 */
function sourceOfFeatures(
	ctx: IExecuteFunctions,
	itemIndices: number[],
	configured: () => FeatureSource,
	l2Set: boolean,
	resizeModeSet: ResizeMode | undefined,
	leaveOut: (error: unknown, itemIndex: number) => void,
): FeatureSource {
	const sources = new Map<number, FeatureSource | undefined>();
	for (const i of itemIndices) {
		try {
			sources.set(i, readFeatureSource(ctx, i));
		} catch (error) {
			leaveOut(error, i);
		}
	}
	const keyOf = (source: FeatureSource | undefined) => (source ? featureSourceKey(source) : '');
	const counts = new Map<string, number>();
	for (const source of sources.values()) counts.set(keyOf(source), (counts.get(keyOf(source)) ?? 0) + 1);
	// The most common wins; a tie goes to the first item's.
	const commonKey = [...counts].reduce((best, entry) => (entry[1] > best[1] ? entry : best), ['', -1])[0];
	const common = [...sources.values()].find((source) => keyOf(source) === commonKey);
	const origin = (source: FeatureSource | undefined) => (source ? describeFeatureSource(source) : 'no record of how (no "featureSource" field)');
	for (const [i, source] of sources) {
		if (keyOf(source) === commonKey) continue;
		leaveOut(
			new TransferLearningError(
				`The features were made with ${origin(source)}, the other items' with ${origin(common)}`,
				'Train on the output of one Extract Features node: the same Backbone, Resize Mode and L2-Normalise for every item',
			),
			i,
		);
	}
	if (!common) return configured();
	// Text features name their encoder themselves; Backbone and Resize Mode are image settings.
	if (inputTypeOf(common.backbone) === 'text') return { backbone: common.backbone, l2Normalize: common.l2Normalize || l2Set };
	const { backbone } = configured();
	const mismatch = (setting: string, value: string) =>
		new TransferLearningError(`The features were made with ${describeFeatureSource(common)}, but "${setting}" is set to ${value}`, `Set "${setting}" here as in Extract Features`);
	if (!madeWithBackbone(common.backbone, backbone)) throw mismatch('Backbone', describeBackbone(backbone));
	if (resizeModeSet && resizeModeSet !== common.resizeMode) {
		throw mismatch('Resize Mode', resizeModeOption.options!.find((o) => 'value' in o && o.value === resizeModeSet)!.name);
	}
	// The head learns on unit vectors if either normalised them; Classify must then normalise too.
	// The features' own spec: a catalog id's earlier settings stay with the model trained on them.
	return { backbone: common.backbone, ...(common.resizeMode ? { resizeMode: common.resizeMode } : {}), l2Normalize: common.l2Normalize || l2Set, ...(common.precision ? { precision: common.precision } : {}) };
}
