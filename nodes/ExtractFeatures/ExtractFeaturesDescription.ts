import type { INodeTypeDescription } from 'n8n-workflow';
import { backendOption, backboneProperties, batchSizeOption, imageSourceProperties, precisionOption, resizeModeOption, textProperty } from '../shared/parameters';

export const extractFeaturesDescription: INodeTypeDescription = {
	displayName: 'Extract Features',
	name: 'extractFeatures',
	icon: 'file:extractFeatures.svg',
	group: ['transform'],
	version: 1,
	subtitle: '={{ $parameter.inputType === "text" ? $parameter.textBackbone : $parameter.backbone }}',
	description: 'Turn images or texts into feature vectors (embeddings) with a pretrained network',
	defaults: { name: 'Extract Features' },
	inputs: ['main'],
	outputs: ['main'],
	credentials: [{ name: 'modelHostApi', required: false }],
	properties: [
		{
			displayName: 'Input',
			name: 'inputType',
			type: 'options',
			options: [
				{ name: 'Images', value: 'image' },
				{ name: 'Text', value: 'text' },
			],
			default: 'image',
		},
		...imageSourceProperties({ inputType: ['image'] }),
		textProperty({ inputType: ['text'] }),
		...backboneProperties({ inputType: ['image'] }, { inputType: ['text'] }),
		{
			displayName: 'Options',
			name: 'options',
			type: 'collection',
			placeholder: 'Add Option',
			default: {},
			options: [
				backendOption,
				batchSizeOption,
				precisionOption,
				{
					displayName: 'L2-Normalise',
					name: 'l2Normalize',
					type: 'boolean',
					default: false,
					description: 'Whether to scale each vector to length 1 (for cosine similarity and vector stores)',
				},
				{
					displayName: 'Output Field',
					name: 'outputField',
					type: 'string',
					default: 'features',
					description: 'Field that receives the feature vector',
				},
				{ ...resizeModeOption, displayOptions: { show: { '/inputType': ['image'] } } },
			],
		},
	],
};
