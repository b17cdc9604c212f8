import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { NodeOperationError } from 'n8n-workflow';
import {
	catalogBackbone,
	customBackbone,
	downloadImage,
	errorMessage,
	extractFeatures,
	l2Normalize,
	TransferLearningError,
	type Backbone,
	type BackboneSpec,
	type HostAuth,
	type NormalizationName,
	type ResizeMode,
} from '../../engine';

export function readBackboneSpec(ctx: IExecuteFunctions): BackboneSpec {
	const id = ctx.getNodeParameter('backbone', 0) as string;
	if (id !== 'custom') return catalogBackbone(id);
	const layerOrNode = (ctx.getNodeParameter('customFeatureLayer', 0, '') as string).trim();
	return customBackbone({
		url: ctx.getNodeParameter('customModelUrl', 0) as string,
		inputSize: ctx.getNodeParameter('customInputSize', 0, 224) as number,
		normalization: ctx.getNodeParameter('customNormalization', 0, 'minusOneToOne') as NormalizationName,
		// The loader uses whichever applies to the model's format.
		featureLayer: layerOrNode,
		outputNode: layerOrNode,
	});
}

/** The Model Host credential is optional: public hosts and mirrors need none. */
export async function readHostAuth(ctx: IExecuteFunctions): Promise<HostAuth | undefined> {
	if (!ctx.getNode().credentials?.modelHostApi) return undefined;
	const credentials = await ctx.getCredentials<{ headerName: string; headerValue: string }>('modelHostApi');
	return credentials.headerName ? { headerName: credentials.headerName, headerValue: credentials.headerValue } : undefined;
}

export async function readImage(ctx: IExecuteFunctions, itemIndex: number): Promise<Buffer> {
	const source = ctx.getNodeParameter('imageSource', itemIndex, 'binary') as string;
	if (source === 'url') {
		const url = ctx.getNodeParameter('imageUrl', itemIndex) as string;
		if (typeof url !== 'string' || !url.trim()) {
			throw new TransferLearningError('The image URL is empty', 'Set "Image URL" to an expression that gives the address, e.g. {{ $json.imageUrl }}');
		}
		return downloadImage(url.trim());
	}
	const property = ctx.getNodeParameter('binaryPropertyName', itemIndex) as string;
	const binary = ctx.getInputData()[itemIndex].binary ?? {};
	if (!binary[property]) {
		const present = Object.keys(binary);
		throw new TransferLearningError(
			`The item has no binary property "${property}"`,
			present.length
				? `Its binary properties are: ${present.join(', ')}. Set "Binary Property" to the one holding the image.`
				: 'Attach an image to the item (e.g. with Read Files from Disk or an HTTP Request set to return a file)',
		);
	}
	return ctx.helpers.getBinaryDataBuffer(itemIndex, property);
}

/** A features field written by Extract Features (or any array of numbers). */
export function readFeatures(ctx: IExecuteFunctions, itemIndex: number, field: string): Float32Array {
	const value = ctx.getInputData()[itemIndex].json[field];
	if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === 'number' && Number.isFinite(v))) {
		throw new TransferLearningError(
			`The field "${field}" is not a list of numbers`,
			'Run the items through Extract Features first, or set "Features Field" to the field that holds them',
		);
	}
	return Float32Array.from(value as number[]);
}

export interface FeatureRequest {
	inputType: 'image' | 'features';
	featuresField: string;
	resizeMode: ResizeMode;
	batchSize: number;
	l2Normalize: boolean;
}

/**
 * Features for each listed item, or the error that item caused. Images are read and decoded
 * concurrently and run through the backbone in batches.
 */
export async function gatherFeatures(
	ctx: IExecuteFunctions,
	itemIndices: number[],
	request: FeatureRequest,
	backbone: () => Promise<Backbone>,
): Promise<(Float32Array | Error)[]> {
	let results: (Float32Array | Error)[];
	if (request.inputType === 'features') {
		results = itemIndices.map((i) => {
			try {
				return readFeatures(ctx, i, request.featuresField);
			} catch (error) {
				return error as Error;
			}
		});
	} else {
		const images = await Promise.allSettled(itemIndices.map((i) => readImage(ctx, i)));
		const readable = images.flatMap((r, j) => (r.status === 'fulfilled' ? [j] : []));
		results = images.map((r) => (r.status === 'rejected' ? (r.reason as Error) : new Error('pending')));
		if (readable.length) {
			const model = await backbone();
			const extracted = await extractFeatures(
				model,
				readable.map((j) => (images[j] as PromiseFulfilledResult<Buffer>).value),
				{ resizeMode: request.resizeMode, batchSize: request.batchSize },
			);
			readable.forEach((j, k) => (results[j] = extracted[k]));
		}
	}
	return request.l2Normalize ? results.map((r) => (r instanceof Error ? r : l2Normalize(r))) : results;
}

export function toNodeError(ctx: IExecuteFunctions, error: unknown, itemIndex?: number): NodeOperationError {
	if (error instanceof NodeOperationError) return error;
	const where = itemIndex === undefined ? '' : `Item ${itemIndex}: `;
	const hint = error instanceof TransferLearningError ? error.hint : undefined;
	return new NodeOperationError(ctx.getNode(), `${where}${errorMessage(error)}`, { itemIndex, description: hint });
}

/** Under Continue On Fail a failed item becomes an item carrying the error; otherwise the run stops. */
export function failedItem(ctx: IExecuteFunctions, error: unknown, itemIndex: number): INodeExecutionData {
	const nodeError = toNodeError(ctx, error, itemIndex);
	if (!ctx.continueOnFail()) throw nodeError;
	// n8n sends an item to the node's error output ("Continue (using error output)") when its json
	// holds nothing but error, message and details; setting `item.error` instead would make n8n
	// replace the json and lose the advice.
	const json: IDataObject = { error: nodeError.message };
	if (nodeError.description) json.details = nodeError.description;
	return { json, pairedItem: { item: itemIndex } };
}
