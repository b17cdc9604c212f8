import { TransferLearningError } from './errors';
import type { ImageSize } from './image';
import { PUBLIC_MODEL_HOST } from './settings';

/** How pixel values 0..255 become model inputs: `x * scale + offset`. */
export interface Normalization {
	scale: number;
	offset: number;
}

export const NORMALIZATIONS = {
	minusOneToOne: { scale: 1 / 127.5, offset: -1 },
	zeroToOne: { scale: 1 / 255, offset: 0 },
	raw: { scale: 1, offset: 0 },
} satisfies Record<string, Normalization>;

export type NormalizationName = keyof typeof NORMALIZATIONS;

/** Everything needed to rebuild a backbone's features exactly; stored in every trained model. */
export interface BackboneSpec {
	/** Catalog id, or `custom:<url>` for a user's model. */
	id: string;
	/** model.json of a tfjs layers or graph model: an http(s) URL or a local path. */
	url: string;
	/** `auto` reads the model.json's `format`. */
	format: 'layers' | 'graph' | 'auto';
	inputSize: ImageSize;
	normalization: NormalizationName;
	/** Layers models: the layer whose output is the feature map. Empty: the model's output. */
	featureLayer?: string;
	/** Graph models: the node to read. Empty: the model's output. */
	outputNode?: string;
}

const MOBILENET_V1_ALPHAS = ['0.25', '0.50', '0.75', '1.0'];
const MOBILENET_V2_ALPHAS = ['0.35', '0.50', '0.75', '1.00'];
const SIZE_224 = { height: 224, width: 224 };

export const CATALOG: Record<string, BackboneSpec & { title: string }> = Object.fromEntries([
	...MOBILENET_V2_ALPHAS.map((alpha) => {
		const id = `mobilenet_v2_${alpha}_224`;
		return [
			id,
			{
				id,
				title: `MobileNetV2 ${alpha} (ImageNet, 1280 features)`,
				url: `${PUBLIC_MODEL_HOST}teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${alpha}_224_no_top/model.json`,
				format: 'layers' as const,
				inputSize: SIZE_224,
				normalization: 'minusOneToOne' as const,
				featureLayer: 'out_relu',
			},
		];
	}),
	...MOBILENET_V1_ALPHAS.map((alpha) => {
		const id = `mobilenet_v1_${alpha}_224`;
		return [
			id,
			{
				id,
				title: `MobileNet v1 ${alpha} (ImageNet, ${Math.round(1024 * Number(alpha))} features)`,
				url: `${PUBLIC_MODEL_HOST}tfjs-models/tfjs/mobilenet_v1_${alpha}_224/model.json`,
				format: 'layers' as const,
				inputSize: SIZE_224,
				normalization: 'minusOneToOne' as const,
				featureLayer: 'conv_pw_13_relu',
			},
		];
	}),
]);

/** Teachable Machine trains on this one; the best accuracy in the catalog for its cost. */
export const DEFAULT_BACKBONE = 'mobilenet_v2_1.00_224';

export function catalogBackbone(id: string): BackboneSpec {
	const entry = CATALOG[id];
	if (!entry) {
		throw new TransferLearningError(
			`Unknown backbone "${id}"`,
			`Choose one of: ${Object.keys(CATALOG).join(', ')}, or a custom model`,
		);
	}
	const { title: _title, ...spec } = entry;
	return spec;
}

export interface CustomBackboneOptions {
	url: string;
	format?: 'layers' | 'graph' | 'auto';
	inputSize?: number;
	normalization?: NormalizationName;
	featureLayer?: string;
	outputNode?: string;
}

export function customBackbone(options: CustomBackboneOptions): BackboneSpec {
	const url = options.url.trim();
	if (!url) throw new TransferLearningError('The custom model URL or path is empty', 'Enter the address of a model.json');
	const size = options.inputSize ?? 224;
	if (!Number.isInteger(size) || size < 16 || size > 1024) {
		throw new TransferLearningError(`Input size ${size} is not a whole number from 16 to 1024`);
	}
	if (options.normalization && !(options.normalization in NORMALIZATIONS)) {
		throw new TransferLearningError(`Unknown normalisation "${options.normalization}"`);
	}
	return {
		id: `custom:${url}`,
		url,
		format: options.format ?? 'auto',
		inputSize: { height: size, width: size },
		normalization: options.normalization ?? 'minusOneToOne',
		featureLayer: options.featureLayer?.trim() || undefined,
		outputNode: options.outputNode?.trim() || undefined,
	};
}

/** Two specs give the same features exactly when these keys match. */
export function backboneKey(spec: BackboneSpec): string {
	return JSON.stringify([spec.url, spec.format, spec.inputSize, spec.normalization, spec.featureLayer, spec.outputNode]);
}
