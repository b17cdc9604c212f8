import type { IExecuteFunctions, INodeExecutionData, INodeType } from 'n8n-workflow';
import { loadBackbone, type BackendChoice, type ResizeMode } from '../../engine';
import { failedItem, gatherFeatures, readBackboneSpec, readHostAuth, toNodeError } from '../shared/items';
import { extractFeaturesDescription } from './ExtractFeaturesDescription';

interface Options {
	backend?: BackendChoice;
	batchSize?: number;
	l2Normalize?: boolean;
	outputField?: string;
	resizeMode?: ResizeMode;
}

export class ExtractFeatures implements INodeType {
	description = extractFeaturesDescription;

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const options = this.getNodeParameter('options', 0, {}) as Options;
		let spec;
		try {
			spec = readBackboneSpec(this);
		} catch (error) {
			throw toNodeError(this, error);
		}
		const auth = await readHostAuth(this);
		let backboneInfo: { id: string; backend: string; fallbackReason?: string } | undefined;
		const results = await gatherFeatures(
			this,
			items.map((_, i) => i),
			{
				inputType: 'image',
				featuresField: '',
				resizeMode: options.resizeMode ?? 'centreCrop',
				batchSize: options.batchSize ?? 16,
				l2Normalize: options.l2Normalize ?? false,
			},
			async () => {
				try {
					const backbone = await loadBackbone(spec, { auth, backend: options.backend });
					backboneInfo = { id: backbone.spec.id, backend: backbone.backend.name, fallbackReason: backbone.backend.fallbackReason };
					return backbone;
				} catch (error) {
					throw toNodeError(this, error);
				}
			},
		);
		const field = options.outputField || 'features';
		return [
			results.map((result, i) => {
				if (result instanceof Error) return failedItem(this, result, i);
				return {
					json: {
						...items[i].json,
						[field]: Array.from(result),
						featureLength: result.length,
						backbone: backboneInfo!.id,
						backend: backboneInfo!.backend,
						...(backboneInfo!.fallbackReason ? { backendFallbackReason: backboneInfo!.fallbackReason } : {}),
					},
					binary: items[i].binary,
					pairedItem: { item: i },
				};
			}),
		];
	}
}
