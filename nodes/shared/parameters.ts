import type { INodeCredentialDescription, INodeProperties } from 'n8n-workflow';
import { CATALOG, DEFAULT_BACKBONE, DEFAULT_TEXT_BACKBONE, inputTypeOf, MAX_TEXT_TOKENS, shortTitle, type InputType } from '../../engine';

/** Where an item's image comes from; shared by all three nodes. */
export function imageSourceProperties(show: Record<string, string[]> = {}): INodeProperties[] {
	return [
		{
			displayName: 'Image Source',
			name: 'imageSource',
			type: 'options',
			options: [
				{ name: 'Binary Property', value: 'binary', description: 'An image file attached to the item' },
				{ name: 'URL', value: 'url', description: 'Download the image from an http(s) address' },
			],
			default: 'binary',
			description: 'Where each item\'s image comes from: a file attached to the item (Read Files from Disk, an HTTP Request returning a file, a webhook upload) or an address to download',
			displayOptions: { show },
		},
		{
			displayName: 'Binary Property',
			name: 'binaryPropertyName',
			type: 'string',
			default: 'data',
			required: true,
			description: 'Name of the binary property that holds the image (JPEG, PNG, WebP, GIF, AVIF or TIFF)',
			hint: 'The name shown on the binary tab of the previous node\'s output, "data" for most nodes',
			displayOptions: { show: { ...show, imageSource: ['binary'] } },
		},
		{
			displayName: 'Image URL',
			name: 'imageUrl',
			type: 'string',
			default: '={{ $json.imageUrl }}',
			required: true,
			description: 'Address of the image to download',
			displayOptions: { show: { ...show, imageSource: ['url'] } },
		},
	];
}

/** The text of each item; shown when Input is Text. */
export function textProperty(show: Record<string, string[]>): INodeProperties {
	return {
		displayName: 'Text',
		name: 'text',
		type: 'string',
		default: '={{ $json.text }}',
		required: true,
		typeOptions: { rows: 2 },
		description: `The text of each item (any language the backbone reads; longer than ${MAX_TEXT_TOKENS} tokens, about ${MAX_TEXT_TOKENS * 3 / 4} words, is cut there)`,
		displayOptions: { show },
	};
}

/** Images, text, or vectors from Extract Features: what Fine-Tune Head and Classify accept. */
export function itemInputProperties(): INodeProperties[] {
	return [
		{
			displayName: 'Input',
			name: 'inputType',
			type: 'options',
			options: [
				{ name: 'Images', value: 'image' },
				{ name: 'Text', value: 'text' },
				{ name: 'Features from Extract Features', value: 'features' },
			],
			default: 'image',
			description: 'What each item brings: an image, a text, or the feature vector Extract Features made from one (to extract once and train or classify many times)',
		},
		...imageSourceProperties({ inputType: ['image'] }),
		textProperty({ inputType: ['text'] }),
		{
			displayName: 'Features Field',
			name: 'featuresField',
			type: 'string',
			default: 'features',
			description: 'Field holding the feature vector. How it was made is read from the "featureSource" field Extract Features adds, and checked; vectors without one are taken on trust.',
			displayOptions: { show: { inputType: ['features'] } },
		},
	];
}

const catalogOptions = (inputType: InputType) =>
	Object.values(CATALOG)
		.filter((entry) => inputTypeOf(entry) === inputType)
		.map((entry) => ({ name: entry.title, value: entry.id }));

/**
 * The image backbone (`backbone`, shown under `show`) and the text backbone (`textBackbone`,
 * shown under `showText`): two lists, so that each shows only backbones of its input type.
 */
export function backboneProperties(show: Record<string, string[]>, showText: Record<string, string[]>): INodeProperties[] {
	const custom = { show: { ...show, backbone: ['custom'] } };
	return [
		{
			displayName: 'Backbone',
			name: 'backbone',
			type: 'options',
			options: [...catalogOptions('image'), { name: 'Custom Model (URL or Path)', value: 'custom' }],
			default: DEFAULT_BACKBONE,
			description: 'Pretrained network that turns an image into features; downloaded once, then cached',
			displayOptions: { show },
		},
		{
			displayName: 'Text Backbone',
			name: 'textBackbone',
			type: 'options',
			options: [...catalogOptions('text'), { name: 'Hugging Face Model', value: 'huggingFace' }],
			default: DEFAULT_TEXT_BACKBONE,
			description: 'Pretrained sentence encoder that turns a text into features. Universal Sentence Encoder Lite reads English and comes with the package: no download.',
			displayOptions: { show: showText },
		},
		{
			displayName: 'Hugging Face Model ID',
			name: 'huggingFaceModel',
			type: 'string',
			default: '',
			required: true,
			placeholder: 'Xenova/all-MiniLM-L6-v2',
			description:
				'Owner/name of a sentence-transformers model on the Hugging Face hub with an ONNX export (onnx/model.onnx beside tokenizer.json), such as the Xenova/… repositories; features are the mean of its token states. Add ":quantized" to read onnx/model_quantized.onnx instead: a quarter of the download, faster on CPU.',
			displayOptions: { show: { ...showText, textBackbone: ['huggingFace'] } },
		},
		{
			displayName: 'Model URL or Path',
			name: 'customModelUrl',
			type: 'string',
			default: '',
			required: true,
			placeholder: 'https://example.com/my-model/model.json',
			description: 'The model.json of a TensorFlow.js layers or graph model',
			hint: 'A host that asks for a header (a token, an API key) needs a Model Host credential, above',
			displayOptions: custom,
		},
		{
			displayName: 'Input Size',
			name: 'customInputSize',
			type: 'number',
			default: 224,
			description: 'Width and height in pixels the model was trained on',
			displayOptions: custom,
		},
		{
			displayName: 'Normalisation',
			name: 'customNormalization',
			type: 'options',
			options: [
				{ name: '-1 to 1 (MobileNet, Teachable Machine)', value: 'minusOneToOne' },
				{ name: '0 to 1', value: 'zeroToOne' },
				{ name: '0 to 255 (Raw Pixels)', value: 'raw' },
			],
			default: 'minusOneToOne',
			description: 'How the model expects pixel values, as it was trained; the wrong one gives poor features without an error',
			displayOptions: custom,
		},
		{
			displayName: 'Feature Layer or Output Node',
			name: 'customFeatureLayer',
			type: 'string',
			default: '',
			description:
				'Layers model: the layer whose output is used (spatial maps are averaged). Graph model: the output node. Empty: the model output.',
			displayOptions: custom,
		},
	];
}

export const backendOption: INodeProperties = {
	displayName: 'Backend',
	name: 'backend',
	type: 'options',
	options: [
		{ name: 'Automatic', value: 'auto', description: 'ONNX Runtime if it loads, else tfjs-node if installed, else WebAssembly, else plain JavaScript' },
		{ name: 'ONNX Runtime', value: 'onnxruntime', description: 'Fastest on x86-64 and ARM Linux, macOS and Windows with glibc' },
		{ name: 'TensorFlow (tfjs-node)', value: 'tensorflow' },
		{ name: 'WebAssembly', value: 'wasm' },
		{ name: 'Plain JavaScript (Slow)', value: 'cpu' },
	],
	default: 'auto',
	description: 'Where the network runs. The TL_BACKEND environment variable sets the default.',
};

export const precisionOption: INodeProperties = {
	displayName: 'Precision',
	name: 'precision',
	type: 'options',
	options: [
		{ name: 'Automatic', value: 'auto', description: 'Int8 where ONNX Runtime runs and its features agree with float32 on the first images, else float32' },
		{ name: 'Float32', value: 'float32', description: 'Full precision' },
		{ name: 'Int8', value: 'int8', description: 'About 1.5-2x faster on ONNX Runtime, features within a few percent of float32; float32 elsewhere' },
	],
	default: 'auto',
	description: 'The numbers image backbones compute with. A trained model records its precision and Classify uses the same. The TL_PRECISION environment variable sets the default.',
};

export const resizeModeOption: INodeProperties = {
	displayName: 'Resize Mode',
	name: 'resizeMode',
	type: 'options',
	options: [
		{ name: 'Centre Crop', value: 'centreCrop', description: 'Fill the square and cut off the edges' },
		{ name: 'Fit with Padding', value: 'fitPad', description: 'Keep the whole image, pad with black' },
		{ name: 'Stretch', value: 'stretch', description: 'Squash to a square' },
	],
	default: 'centreCrop',
	description: 'How an image is brought to the square the backbone reads',
};

export const batchSizeOption: INodeProperties = {
	displayName: 'Batch Size',
	name: 'batchSize',
	type: 'number',
	default: 16,
	typeOptions: { minValue: 1, maxValue: 256 },
	description: 'Images or texts the backbone reads at once to make features; larger is faster, up to memory',
};

/**
 * A canvas subtitle naming the backbone the node uses, e.g. "MobileNet v2 1.00", not its id. n8n
 * evaluates it in the editor, where the catalog is not at hand: the names travel in the expression.
 */
export function backboneSubtitle(): string {
	const names = Object.fromEntries([...Object.values(CATALOG).map((e) => [e.id, shortTitle(e.title)]), ['custom', 'Custom model']]);
	return `={{ (${JSON.stringify(names)})[$parameter.inputType === "text" ? $parameter.textBackbone : $parameter.backbone] || ($parameter.inputType === "text" ? $parameter.textBackbone : $parameter.backbone) }}`;
}

/**
 * The Model Host credential, offered only where a download may need a header: a custom model
 * URL, or a text encoder from the Hugging Face hub. Catalog image backbones and the bundled text
 * encoder come from public hosts (or the mirror).
 */
export const modelHostCredential: INodeCredentialDescription = {
	name: 'modelHostApi',
	required: false,
	displayOptions: {
		hide: {
			backbone: Object.values(CATALOG).filter((e) => inputTypeOf(e) === 'image').map((e) => e.id),
			textBackbone: [DEFAULT_TEXT_BACKBONE],
		},
	},
};
