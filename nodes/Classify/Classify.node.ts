import { createHash } from 'node:crypto';
import type { IDataObject, IExecuteFunctions, ILoadOptionsFunctions, INodeExecutionData, INodePropertyOptions, INodeType } from 'n8n-workflow';
import {
	backboneKey,
	classify,
	importModel,
	LruCache,
	loadBackbone,
	ModelStore,
	TransferLearningError,
	UNKNOWN_LABEL,
	type BackendChoice,
	type TrainedModel,
	type VersionRef,
} from '../../engine';

import { failedItem, gatherFeatures, readHostAuth, toNodeError } from '../shared/items';
import { classifyDescription } from './ClassifyDescription';

interface Options {
	backend?: BackendChoice;
	batchSize?: number;
}

export class Classify implements INodeType {
	description = classifyDescription;

	methods = {
		loadOptions: {
			async getModels(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
				const models = await new ModelStore().list();
				return models.map((m) => ({ name: m.name, value: m.name, description: `Latest version ${m.latestVersion}` }));
			},
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const options = this.getNodeParameter('options', 0, {}) as Options;
		const inputType = this.getNodeParameter('inputType', 0) as 'image' | 'features';
		const threshold = this.getNodeParameter('threshold', 0, 0) as number;
		const topK = this.getNodeParameter('topK', 0, 3) as number;
		const routeByClass = this.getNodeParameter('routeByClass', 0, false) as boolean;
		const classNames = routeByClass
			? (this.getNodeParameter('classNames', 0, '') as string).split(',').map((n) => n.trim()).filter((n) => n)
			: [];
		const store = new ModelStore();
		const auth = await readHostAuth(this);

		// Each item may name its own model (an expression over webhook data); resolving per item
		// also means a retrain that lands mid-burst is used from the next item on.
		const models: (TrainedModel | Error)[] = await Promise.all(
			items.map(async (_, i) => {
				try {
					const model = await resolveModel(this, store, i);
					if (routeByClass) checkOutputsMatch(classNames, model);
					return model;
				} catch (error) {
					return error as Error;
				}
			}),
		);
		const results: (INodeExecutionData & { output: number })[] = new Array(items.length);
		const groups = new Map<string, number[]>();
		models.forEach((model, i) => {
			if (model instanceof Error) return;
			const key = JSON.stringify([backboneKey(model.manifest.backbone), model.manifest.resizeMode, model.manifest.l2Normalize]);
			groups.set(key, [...(groups.get(key) ?? []), i]);
		});
		for (const indices of groups.values()) {
			const { manifest } = models[indices[0]] as TrainedModel;
			let backend: string | undefined;
			const features = await gatherFeatures(
				this,
				indices,
				{
					inputType,
					featuresField: this.getNodeParameter('featuresField', 0, 'features') as string,
					resizeMode: manifest.resizeMode,
					batchSize: options.batchSize ?? 16,
					l2Normalize: manifest.l2Normalize,
				},
				async () => {
					const backbone = await loadBackbone(manifest.backbone, { auth, backend: options.backend }).catch((error) =>
						Promise.reject(toNodeError(this, error)),
					);
					backend = backbone.backend.name;
					return backbone;
				},
			);
			indices.forEach((i, j) => {
				const f = features[j];
				if (f instanceof Error) {
					models[i] = f;
					return;
				}
				const model = models[i] as TrainedModel;
				try {
					const [prediction] = classify(model.head, [f], { topK, threshold });
					const output = routeByClass ? outputIndex(classNames, prediction.label) : 0;
					const json: IDataObject = {
						...items[i].json,
						label: prediction.label,
						confidence: prediction.confidence,
						scores: prediction.scores,
						model: model.manifest.name,
						version: model.manifest.version,
						...(backend ? { backend } : {}),
					};
					results[i] = { json, binary: items[i].binary, pairedItem: { item: i }, output };
				} catch (error) {
					models[i] = error as Error;
				}
			});
		}

		const outputs: INodeExecutionData[][] = routeByClass ? [...classNames, UNKNOWN_LABEL].map(() => []) : [[]];
		items.forEach((_, i) => {
			const model = models[i];
			if (model instanceof Error) {
				// Failed items under Continue On Fail go where unclassifiable items go.
				outputs[outputs.length - 1].push(failedItem(this, model, i));
				return;
			}
			const { output, ...item } = results[i];
			outputs[output].push(item);
		});
		return outputs;
	}
}

// Webhook bursts often carry the same exported model file; parse it once.
const importedModels = new LruCache<string, TrainedModel>(16);

async function resolveModel(ctx: IExecuteFunctions, store: ModelStore, itemIndex: number): Promise<TrainedModel> {
	if (ctx.getNodeParameter('modelSource', itemIndex) === 'binary') {
		const property = ctx.getNodeParameter('modelBinaryProperty', itemIndex) as string;
		if (!ctx.getInputData()[itemIndex].binary?.[property]) {
			throw new TransferLearningError(`The item has no binary property "${property}" with a model file`, 'Attach the model file Fine-Tune Head exported, or set "Model File Property"');
		}
		const file = await ctx.helpers.getBinaryDataBuffer(itemIndex, property);
		const key = createHash('sha256').update(file).digest('hex');
		let model = importedModels.get(key);
		if (!model) {
			model = importModel(file);
			importedModels.set(key, model);
		}
		return model;
	}
	const name = String(ctx.getNodeParameter('modelName', itemIndex) ?? '').trim();
	if (!name) throw new TransferLearningError('No model is selected', 'Choose a model in "Model Name or ID"');
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

function outputIndex(classNames: string[], label: string): number {
	const index = classNames.indexOf(label);
	return index === -1 ? classNames.length : index;
}
