import { createHash } from 'node:crypto';
import type { IDataObject, IExecuteFunctions, ILoadOptionsFunctions, INodeExecutionData, INodeListSearchResult, INodePropertyOptions, INodeType } from 'n8n-workflow';
import {
	Backbone,
	classify,
	classifyViews,
	describeFeatureSource,
	featureSourceKey,
	featureSourceMismatch,
	featureSourceOf,
	importModel,
	labelProblem,
	inputTypeOf,
	LruCache,
	ModelStore,
	TransferLearningError,
	UNKNOWN_LABEL,
	type BackendChoice,
	type TrainedModel,
	type VersionRef,
} from '../../engine';

import { n8nFileAccess } from '../shared/files';
import { asError, extractorBackend, failedItem, failedRun, featureRequest, gatherFeatures, gatherImageViews, loadExtractor, readFeatureSource, readHostAuth, settleLimited } from '../shared/items';
import { classifyDescription } from './ClassifyDescription';
import { classNameOptions, modelVersionOptions, searchModels } from './models';

interface Options {
	backend?: BackendChoice;
	batchSize?: number;
	allowFileBackbone?: boolean;
	includeInputFields?: boolean;
	resultField?: string;
	testTimeAveraging?: boolean;
}

export class Classify implements INodeType {
	description = classifyDescription;

	methods = {
		listSearch: {
			async searchModels(this: ILoadOptionsFunctions, filter?: string): Promise<INodeListSearchResult> {
				return { results: await searchModels(filter) };
			},
		},
		loadOptions: {
			async getModelVersions(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
				return modelVersionOptions(this);
			},
			async getClassNames(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
				return classNameOptions(this);
			},
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const routeByClass = this.getNodeParameter('routeByClass', 0, false) as boolean;
		const classNames = routeByClass ? splitClassNames(this.getNodeParameter('classNames', 0, []) as string | string[]) : [];
		// The outputs n8n draws (see outputsFromClassNames); failed items go to the last.
		const outputs: INodeExecutionData[][] = routeByClass ? [...classNames, UNKNOWN_LABEL].map(() => []) : [[]];
		try {
			if (routeByClass) checkClassNames(classNames);
			const options = this.getNodeParameter('options', 0, {}) as Options;
			const inputType = this.getNodeParameter('inputType', 0) as 'image' | 'text' | 'features';
			const threshold = this.getNodeParameter('threshold', 0, 0) as number;
			const topK = this.getNodeParameter('topK', 0, 3) as number;
			const store = new ModelStore();
			const auth = await readHostAuth(this);

			// Each item may name its own model (an expression over webhook data); resolving per item
			// also means a retrain that lands mid-burst is used from the next item on.
			const resolved = await settleLimited(
				items.map((_, i) => i),
				MODELS_RESOLVED_AT_ONCE,
				async (i) => {
					const model = await resolveModel(this, store, i, options.allowFileBackbone ?? false);
					if (routeByClass) checkOutputsMatch(classNames, model);
					if (inputType === 'features') checkFeatureSource(this, i, model);
					else checkInputType(inputType, model);
					return model;
				},
			);
			const models: (TrainedModel | Error)[] = resolved.map((r) => (r.status === 'fulfilled' ? r.value : asError(r.reason)));
			const results: (INodeExecutionData & { output: number })[] = new Array(items.length);
			const groups = new Map<string, number[]>();
			models.forEach((model, i) => {
				if (model instanceof Error) return;
				// One extraction per source and precision: each model gets features in the precision it was trained on.
				const key = `${featureSourceKey(featureSourceOf(model.manifest))}:${model.manifest.precision ?? 'float32'}`;
				groups.set(key, [...(groups.get(key) ?? []), i]);
			});
			for (const indices of groups.values()) {
				const { manifest } = models[indices[0]] as TrainedModel;
				let backend: string | undefined;
				let backbone: Backbone | undefined;
				// One vector per item, or with Test-Time Averaging every view of each image.
				let features: (Float32Array | Float32Array[] | Error)[];
				try {
					const request = featureRequest(this, inputType, manifest, options.batchSize);
					const extractor = async () => {
						// The precision the head was trained on; models from before int8 were float32.
						const extractor = await loadExtractor(manifest.backbone, { auth, backend: options.backend, fileAccess: n8nFileAccess(this), precision: manifest.precision ?? 'float32' });
						backend = extractorBackend(extractor).name;
						if (extractor instanceof Backbone) backbone = extractor;
						return extractor;
					};
					features =
						options.testTimeAveraging && inputType === 'image'
							? await gatherImageViews(this, indices, request, extractor)
							: await gatherFeatures(this, indices, request, extractor);
				} catch (error) {
					// The backbone of this group's model failed to load: the items of other models go on.
					features = indices.map(() => error as Error);
				}
				indices.forEach((i, j) => {
					const f = features[j];
					if (f instanceof Error) {
						models[i] = f;
						return;
					}
					const model = models[i] as TrainedModel;
					try {
						const [prediction] = Array.isArray(f) ? classifyViews(model.head, [f], { topK, threshold }) : classify(model.head, [f], { topK, threshold });
						const output = routeByClass ? outputIndex(classNames, prediction.label) : 0;
						const result: IDataObject = {
							label: prediction.label,
							confidence: prediction.confidence,
							scores: prediction.scores,
							model: model.manifest.name,
							version: model.manifest.version,
							...(backend ? { backend } : {}),
							...(backbone?.precision ? { precision: backbone.precision } : {}),
						};
						const json = withInput(items[i].json, result, options);
						results[i] = { json, binary: items[i].binary, pairedItem: { item: i }, output };
					} catch (error) {
						models[i] = error as Error;
					}
				});
			}

			items.forEach((_, i) => {
				const model = models[i];
				if (model instanceof Error) {
					outputs[outputs.length - 1].push(failedItem(this, model, i));
					return;
				}
				const { output, ...item } = results[i];
				outputs[output].push(item);
			});
		} catch (error) {
			outputs.forEach((output) => (output.length = 0));
			outputs[outputs.length - 1].push(...failedRun(this, error));
		}
		return outputs;
	}
}

// Model files and stored versions read at once: a burst of items does not read them all together.
const MODELS_RESOLVED_AT_ONCE = 8;

// Webhook bursts often carry the same exported model file; parse it once. Only files up to 4 MB
// are kept, so the cache holds at most 64 MB of them.
const importedModels = new LruCache<string, TrainedModel>(16);
const CACHED_MODEL_FILE_BYTES = 4 * 1024 * 1024;

async function resolveModel(ctx: IExecuteFunctions, store: ModelStore, itemIndex: number, allowCustomBackbone: boolean): Promise<TrainedModel> {
	if (ctx.getNodeParameter('modelSource', itemIndex) === 'binary') {
		const property = ctx.getNodeParameter('modelBinaryProperty', itemIndex) as string;
		if (!ctx.getInputData()[itemIndex].binary?.[property]) {
			throw new TransferLearningError(`The item has no binary property "${property}" with a model file`, 'Attach the model file Fine-Tune Head exported, or set "Model File Property"');
		}
		const file = await ctx.helpers.getBinaryDataBuffer(itemIndex, property);
		if (file.length > CACHED_MODEL_FILE_BYTES) return importModel(file, { allowCustomBackbone });
		const key = `${allowCustomBackbone}:${createHash('sha256').update(file).digest('hex')}`;
		let model = importedModels.get(key);
		if (!model) {
			model = importModel(file, { allowCustomBackbone });
			importedModels.set(key, model);
		}
		return model;
	}
	const name = String(ctx.getNodeParameter('modelName', itemIndex, '', { extractValue: true }) ?? '').trim();
	if (!name) throw new TransferLearningError('No model is selected', 'Choose a model in "Model"');
	return store.load(ModelStore.checkName(name), parseVersion(ctx.getNodeParameter('modelVersion', itemIndex, 'latest')));
}

function parseVersion(raw: unknown): VersionRef {
	const text = String(raw ?? '').trim().toLowerCase();
	if (text === '' || text === 'latest') return 'latest';
	const version = Number(text);
	if (!Number.isInteger(version) || version < 1) {
		throw new TransferLearningError(`"${raw}" is not a model version`, 'Write "latest" or a version number such as 3');
	}
	return version;
}

/**
 * The results first, so that Table view opens on them; under `resultField` when one is set. Results
 * win over input fields of the same name.
 */
function withInput(input: IDataObject, result: IDataObject, options: Options): IDataObject {
	const field = options.resultField?.trim();
	const own = field ? { [field]: result } : result;
	if (options.includeInputFields === false) return own;
	return { ...own, ...Object.fromEntries(Object.entries(input).filter(([key]) => !(key in own))) };
}

/** As n8n splits them to draw the outputs: picked from the list, or comma-separated with a trailing comma. */
function splitClassNames(value: string | string[]): string[] {
	return (Array.isArray(value) ? value : String(value ?? '').split(','))
		.map((name) => String(name).trim())
		.filter((name) => name);
}

/** The names must be the labels a model can have: at least one, each once, and never the reserved one. */
function checkClassNames(classNames: string[]): void {
	const fail = (why: string, hint: string) => new TransferLearningError(`Class Names: ${why}`, hint);
	if (!classNames.length) throw fail('no class is named', 'List the classes of the model, comma-separated, e.g. cat, dog');
	for (const name of classNames) {
		const problem = labelProblem(name);
		if (problem) throw fail(`"${name.slice(0, 50)}" cannot be a class: ${problem}`, `Write the labels of the model; the last output already takes the "${UNKNOWN_LABEL}" items`);
	}
	const twice = classNames.find((name, k) => classNames.indexOf(name) !== k);
	if (twice) throw fail(`"${twice}" is listed twice`, 'List each class once');
}

/** Labels are never "unknown" nor hold a comma: models that do are refused when loaded. */
function checkOutputsMatch(classNames: string[], model: TrainedModel): void {
	const labels = model.manifest.labels;
	const missing = labels.filter((l) => !classNames.includes(l));
	const extra = classNames.filter((n) => !labels.includes(n));
	if (missing.length || extra.length) {
		throw new TransferLearningError(
			`The outputs (${classNames.join(', ') || 'none'}) do not match the classes of model "${model.manifest.name}" version ${model.manifest.version} (${labels.join(', ')})`,
			`Set "Class Names" to: ${labels.join(', ')}`,
		);
	}
}

/** Features that Extract Features made otherwise than the model's own would give confident nonsense. */
function checkFeatureSource(ctx: IExecuteFunctions, itemIndex: number, model: TrainedModel): void {
	const given = readFeatureSource(ctx, itemIndex);
	if (!given) return;
	const trained = featureSourceOf(model.manifest);
	const mismatch = featureSourceMismatch(trained, given);
	if (mismatch) {
		throw new TransferLearningError(
			`${mismatch}, but model "${model.manifest.name}" version ${model.manifest.version} was trained on ${describeFeatureSource(trained)}`,
			`Set Extract Features to the model's backbone, Resize Mode and L2-Normalise, or classify the images themselves (Input: Images)`,
		);
	}
}

/** A text model given images (or the other way round) would compute nothing sensible. */
function checkInputType(inputType: 'image' | 'text', model: TrainedModel): void {
	const trainedOn = inputTypeOf(model.manifest.backbone);
	if (trainedOn === inputType) return;
	const { name, version } = model.manifest;
	throw new TransferLearningError(
		`Model "${name}" version ${version} was trained on ${trainedOn === 'text' ? 'texts' : 'images'}, but Input is set to ${inputType === 'text' ? 'Text' : 'Images'}`,
		`Set Input to ${trainedOn === 'text' ? 'Text' : 'Images'}, or choose a model trained on ${inputType === 'text' ? 'texts' : 'images'}`,
	);
}

function outputIndex(classNames: string[], label: string): number {
	const index = classNames.indexOf(label);
	return index === -1 ? classNames.length : index;
}
