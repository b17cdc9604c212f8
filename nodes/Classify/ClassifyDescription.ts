import type { INodeTypeDescription } from 'n8n-workflow';
import { backendOption, batchSizeOption, itemInputProperties } from '../shared/parameters';

/**
 * Evaluated by n8n in the editor and at run time to draw one output per class plus `unknown`.
 * It must stay self-contained: n8n stringifies it into an expression.
 */
const outputsFromClassNames = (parameters: { routeByClass?: boolean; classNames?: string }) => {
	if (!parameters.routeByClass) return [{ type: 'main', displayName: 'Classified' }];
	const names = String(parameters.classNames ?? '')
		.split(',')
		.map((name) => name.trim())
		.filter((name) => name);
	return [...names, 'unknown'].map((name) => ({ type: 'main', displayName: name }));
};

export const classifyDescription: INodeTypeDescription = {
	displayName: 'Classify',
	name: 'classify',
	icon: 'file:classify.svg',
	group: ['transform'],
	version: 1,
	subtitle: '={{ $parameter.modelSource === "binary" ? "model from file" : $parameter.modelName }}',
	description: 'Label images, texts or feature vectors with a model trained by Fine-Tune Head',
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
		},
		{
			displayName: 'Model Name or ID',
			name: 'modelName',
			type: 'options',
			typeOptions: { loadOptionsMethod: 'getModels' },
			default: '',
			required: true,
			description: 'Choose from the list, or specify a name using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
			displayOptions: { show: { modelSource: ['store'] } },
		},
		{
			displayName: 'Version',
			name: 'modelVersion',
			type: 'string',
			default: 'latest',
			description: '"latest" picks up each retrain at once; a number pins that version',
			displayOptions: { show: { modelSource: ['store'] } },
		},
		{
			displayName: 'Model File Property',
			name: 'modelBinaryProperty',
			type: 'string',
			default: 'model',
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
			type: 'string',
			default: '',
			required: true,
			placeholder: 'cat, dog',
			description: "The model's classes, comma-separated, in the order the outputs should have. Checked against the model when it runs.",
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
