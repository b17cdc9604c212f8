import type { IDataObject, IExecuteFunctions, INodeExecutionData, INodeType } from 'n8n-workflow';
import { Backbone, type BackendChoice, type FeatureSource, type PrecisionChoice, type ResizeMode } from '../../engine';
import { n8nFileAccess } from '../shared/files';
import { extractorBackend, FEATURE_SOURCE_FIELD, failedItem, failedRun, featureRequest, gatherFeatures, loadExtractor, readBackboneSpec, readHostAuth } from '../shared/items';
import { extractFeaturesDescription } from './ExtractFeaturesDescription';

interface Options {
	backend?: BackendChoice;
	batchSize?: number;
	l2Normalize?: boolean;
	outputField?: string;
	precision?: PrecisionChoice;
	resizeMode?: ResizeMode;
}

export class ExtractFeatures implements INodeType {
	description = extractFeaturesDescription;

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		try {
			const options = this.getNodeParameter('options', 0, {}) as Options;
			// Workflows saved before text input have no Input parameter: images.
			const inputType = this.getNodeParameter('inputType', 0, 'image') as 'image' | 'text';
			const source: FeatureSource = {
				backbone: readBackboneSpec(this, inputType),
				...(inputType === 'image' ? { resizeMode: options.resizeMode ?? 'centreCrop' } : {}),
				l2Normalize: options.l2Normalize ?? false,
			};
			const auth = await readHostAuth(this);
			let backend: { name: string; fallbackReason?: string } | undefined;
			let backbone: Backbone | undefined;
			const results = await gatherFeatures(
				this,
				items.map((_, i) => i),
				featureRequest(this, inputType, source, options.batchSize),
				async () => {
					const extractor = await loadExtractor(source.backbone, { auth, backend: options.backend, fileAccess: n8nFileAccess(this), precision: options.precision });
					backend = extractorBackend(extractor);
					if (extractor instanceof Backbone) backbone = extractor;
					return extractor;
				},
			);
			// Known once the first batch ran; Fine-Tune Head passes it on to the model, and Classify uses it.
			if (backbone?.precision) source.precision = backbone.precision;
			const field = options.outputField || 'features';
			return [
				results.map((result, i) => {
					if (result instanceof Error) return failedItem(this, result, i);
					return {
						json: {
							...items[i].json,
							[field]: Array.from(result),
							featureLength: result.length,
							// A copy each: a later node that edits one item's must not change the others'.
							[FEATURE_SOURCE_FIELD]: structuredClone(source) as unknown as IDataObject,
							backbone: source.backbone.id,
							backend: backend!.name,
							...(source.precision ? { precision: source.precision } : {}),
							...(backend!.fallbackReason ? { backendFallbackReason: backend!.fallbackReason } : {}),
						},
						binary: items[i].binary,
						pairedItem: { item: i },
					};
				}),
			];
		} catch (error) {
			return [failedRun(this, error)];
		}
	}
}
