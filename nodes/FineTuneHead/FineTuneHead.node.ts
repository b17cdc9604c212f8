import type { IDataObject, IExecuteFunctions, INodeExecutionData, INodeType } from 'n8n-workflow';
import {
	exportModel,
	loadBackbone,
	ModelStore,
	saveTrainedModel,
	trainHead,
	TransferLearningError,
	type BackendChoice,
	type ResizeMode,
	type TrainingOptions,
} from '../../engine';
import { failedItem, gatherFeatures, readBackboneSpec, readHostAuth, toNodeError } from '../shared/items';
import { fineTuneHeadDescription } from './FineTuneHeadDescription';

interface Options {
	backend?: BackendChoice;
	batchSize?: number;
	l2Normalize?: boolean;
	outputModelFile?: boolean;
	modelBinaryProperty?: string;
	resizeMode?: ResizeMode;
}

export class FineTuneHead implements INodeType {
	description = fineTuneHeadDescription;

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const options = this.getNodeParameter('options', 0, {}) as Options;
		const training = this.getNodeParameter('training', 0, {}) as Partial<TrainingOptions>;
		const inputType = this.getNodeParameter('inputType', 0) as 'image' | 'features';
		const resizeMode = options.resizeMode ?? 'centreCrop';
		const l2Normalize = options.l2Normalize ?? false;
		const everyItem = items.map((_, i) => i);
		let modelName: string;
		let spec;
		try {
			modelName = ModelStore.checkName((this.getNodeParameter('modelName', 0) as string).trim());
			spec = readBackboneSpec(this);
		} catch (error) {
			throw toNodeError(this, error);
		}

		const skipped: IDataObject[] = [];
		const skip = (error: unknown, i: number) => skipped.push({ item: i, ...failedItem(this, error, i).json });
		const labels = everyItem.map((i) => {
			const raw = this.getNodeParameter('label', i, '') as unknown;
			const label = typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : typeof raw === 'string' ? raw.trim() : '';
			if (!label) {
				skip(new TransferLearningError('The label is missing or empty', 'Set "Label" to an expression that gives each item its class, e.g. {{ $json.label }}'), i);
			}
			return label;
		});
		const labelled = everyItem.filter((i) => labels[i]);
		if (inputType === 'features') {
			// Features from another backbone would train a head that Classify can never feed.
			for (const i of labelled) {
				const producedBy = items[i].json.backbone;
				if (typeof producedBy === 'string' && producedBy !== spec.id) {
					throw toNodeError(this, new TransferLearningError(
						`The features were extracted with "${producedBy}" but the node is set to backbone "${spec.id}"`,
						'Choose the same backbone here as in Extract Features',
					), i);
				}
			}
		}
		const auth = await readHostAuth(this);
		const features = await gatherFeatures(
			this,
			labelled,
			{ inputType, featuresField: this.getNodeParameter('featuresField', 0, 'features') as string, resizeMode, batchSize: options.batchSize ?? 16, l2Normalize },
			() => loadBackbone(spec, { auth, backend: options.backend }).catch((error) => Promise.reject(toNodeError(this, error))),
		);
		const usable: number[] = [];
		features.forEach((f, j) => (f instanceof Error ? skip(f, labelled[j]) : usable.push(j)));

		try {
			const trained = await trainHead(
				usable.map((j) => features[j] as Float32Array),
				usable.map((j) => labels[labelled[j]]),
				training,
				options.backend,
			);
			const model = await saveTrainedModel(new ModelStore(), modelName, trained, spec, { resizeMode, l2Normalize });
			const { manifest } = model;
			const item: INodeExecutionData = {
				json: {
					modelName: manifest.name,
					version: manifest.version,
					accuracy: manifest.metrics.accuracy,
					macroF1: manifest.metrics.macroF1,
					evaluatedOn: manifest.evaluatedOn,
					labels: manifest.labels,
					examplesPerClass: manifest.examplesPerClass,
					trainCount: manifest.trainCount,
					validationCount: manifest.validationCount,
					bestEpoch: manifest.bestEpoch,
					backbone: manifest.backbone.id,
					metrics: manifest.metrics as unknown as IDataObject,
					history: manifest.history as unknown as IDataObject[],
					createdAt: manifest.createdAt,
					...(skipped.length ? { skippedItems: skipped } : {}),
				},
				pairedItem: everyItem.map((i) => ({ item: i })),
			};
			if (options.outputModelFile) {
				const property = options.modelBinaryProperty || 'model';
				item.binary = {
					[property]: await this.helpers.prepareBinaryData(exportModel(model), `${manifest.name}-v${manifest.version}.tlmodel`, 'application/octet-stream'),
				};
			}
			return [[item]];
		} catch (error) {
			const nodeError = toNodeError(this, error);
			if (!this.continueOnFail()) throw nodeError;
			return [[{ json: { error: nodeError.message, details: nodeError.description ?? undefined, skippedItems: skipped }, pairedItem: everyItem.map((i) => ({ item: i })) }]];
		}
	}
}
