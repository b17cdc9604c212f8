import type { INodeTypeDescription } from 'n8n-workflow';
import { backendOption, batchSizeOption, itemInputProperties } from '../shared/parameters';

/**
 * Evaluated by n8n in the editor and at run time to draw one output per class plus `unknown`.
 * It must stay self-contained: n8n stringifies it into an expression.
 */
const outputsFromClassNames = (parameters: { routeByClass?: boolean; classNames?: string | string[] }) => {
	if (!parameters.routeByClass) return [{ type: 'main', displayName: 'Classified' }];
	// Picked from the list (an array) or typed, comma-separated, in an expression.
	const names = (Array.isArray(parameters.classNames) ? parameters.classNames : String(parameters.classNames ?? '').split(','))
		.map((name) => String(name))
		.map((name) => name.trim())
		.filter((name) => name);
	return [...names, 'unknown'].map((name) => ({ type: 'main', displayName: name }));
};

export const classifyDescription: INodeTypeDescription = {
	displayName: 'Classify',
	name: 'classify',
	icon: { light: 'file:classify.svg', dark: 'file:classify.dark.svg' },
	group: ['transform'],
	version: 1,
	subtitle: '={{ $parameter.modelSource === "binary" ? "Model from file" : ($parameter.modelName.value || $parameter.modelName) + " · " + ($parameter.modelVersion === "latest" || !$parameter.modelVersion ? "latest" : "v" + $parameter.modelVersion) }}',
	description: 'Label images, texts or feature vectors with a model trained by Fine-Tune Head',
	usableAsTool: {
		replacements: {
			description:
				'Classifies one image or one text with a model trained on this n8n, and returns its class: `label` (one of the model\'s classes, or "unknown" when the model is unsure), `confidence` (0 to 1) and `scores` (the most likely classes with their scores). Give it what the node reads: the text, or the image address, as its parameters ask.',
		},
	},
	defaults: { name: 'Classify' },
	inputs: ['main'],
	outputs: `={{(${outputsFromClassNames})($parameter)}}`,
	credentials: [{ name: 'modelHostApi', required: false }],
	properties: [
		{
			displayName: 'Model Source',
			name: 'modelSource',
			type: 'options',
			options: [
				{ name: 'Model Store', value: 'store', description: 'A model saved by Fine-Tune Head on this n8n' },
				{ name: 'Model File (Binary Property)', value: 'binary', description: 'A model file exported by Fine-Tune Head' },
			],
			default: 'store',
			description: 'Where the model comes from: the models Fine-Tune Head saved on this n8n, or a model file attached to each item',
		},
		{
			displayName: 'Model',
			name: 'modelName',
			type: 'resourceLocator',
			default: { mode: 'list', value: '' },
			required: true,
			description: 'A model Fine-Tune Head saved on this n8n',
			hint: 'Pick from the list, or switch to By Name to write a name or an expression (e.g. from the webhook query)',
			modes: [
				{
					displayName: 'From List',
					name: 'list',
					type: 'list',
					placeholder: 'Select a model...',
					// The store needs no credential: the Model Host one is only for backbone downloads.
					typeOptions: { searchListMethod: 'searchModels', searchable: true, skipCredentialsCheckInRLC: true },
				},
				{ displayName: 'By Name', name: 'name', type: 'string', placeholder: 'e.g. flowers' },
			],
			displayOptions: { show: { modelSource: ['store'] } },
		},
		{
			displayName: 'Version',
			name: 'modelVersion',
			type: 'options',
			typeOptions: { loadOptionsMethod: 'getModelVersions', loadOptionsDependsOn: ['modelName.value'] },
			default: 'latest',
			description:
				'"Latest" picks up each retrain at once; a version number pins that version. Choose from the list, or specify a version number or "latest" using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
			displayOptions: { show: { modelSource: ['store'] } },
		},
		{
			displayName: 'Model File Property',
			name: 'modelBinaryProperty',
			type: 'string',
			default: 'model',
			description: 'Name of the binary property holding the model file (a .tlmodel file Fine-Tune Head exported with Output Model File on)',
			displayOptions: { show: { modelSource: ['binary'] } },
		},
		...itemInputProperties(),
		{
			displayName: 'Confidence Threshold',
			name: 'threshold',
			type: 'number',
			typeOptions: { minValue: 0, maxValue: 1, numberPrecision: 2 },
			default: 0,
			description: 'Below this confidence the label is "unknown"',
		},
		{
			displayName: 'Top K',
			name: 'topK',
			type: 'number',
			typeOptions: { minValue: 1 },
			default: 3,
			description: 'How many classes to list in "scores", best first',
		},
		{
			displayName: 'Route to One Output per Class',
			name: 'routeByClass',
			type: 'boolean',
			default: false,
			description: 'Whether to send each item to the output of its class, with a last output for "unknown"',
		},
		{
			displayName: 'Class Names',
			name: 'classNames',
			type: 'multiOptions',
			typeOptions: { loadOptionsMethod: 'getClassNames', loadOptionsDependsOn: ['modelName.value', 'modelVersion'] },
			default: [],
			required: true,
			description:
				'The model\'s classes, one output each, in the order picked. Checked against the model when it runs. Choose from the list, or specify the names comma-separated using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
			hint: 'Pick every class of the model; items it is unsure of go to the last output, "unknown"',
			displayOptions: { show: { routeByClass: [true] } },
		},
		{
			displayName: 'Options',
			name: 'options',
			type: 'collection',
			placeholder: 'Add Option',
			default: {},
			options: [
				{
					displayName: 'Allow Custom Backbone from Model File',
					name: 'allowFileBackbone',
					type: 'boolean',
					default: false,
					description:
						'Whether a model file may name a backbone outside the catalog: a URL this n8n then fetches (with the Model Host credential, if set) or a path on this server it reads. Turn on only if every model file comes from someone you trust; paths still follow N8N_RESTRICT_FILE_ACCESS_TO.',
					displayOptions: { show: { '/modelSource': ['binary'] } },
				},
				backendOption,
				batchSizeOption,
				{
					displayName: 'Include Input Fields',
					name: 'includeInputFields',
					type: 'boolean',
					default: true,
					description: "Whether to keep the input item's fields after the results (a webhook's headers, params and query, for example); its binary data is kept either way",
				},
				{
					displayName: 'Put Results Under',
					name: 'resultField',
					type: 'string',
					default: '',
					placeholder: 'e.g. classification',
					description: 'Field that receives label, confidence, scores, model, version and backend as one object. Empty: they are fields of the item, before the input fields.',
				},
				{
					displayName: 'Test-Time Averaging',
					name: 'testTimeAveraging',
					type: 'boolean',
					default: false,
					description:
						"Whether to classify each image by the average over itself, its mirror image and four zoomed corner crops, the views Fine-Tune Head's Augmentation trains on (images only). Each image goes through the backbone 6 times.",
				},
			],
		},
	],
};
