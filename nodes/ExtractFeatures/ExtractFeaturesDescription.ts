import type { INodeTypeDescription } from 'n8n-workflow';
import { backendOption, backboneProperties, backboneSubtitle, batchSizeOption, imageSourceProperties, modelHostCredential, precisionOption, resizeModeOption, textProperty } from '../shared/parameters';

export const extractFeaturesDescription: INodeTypeDescription = {
	displayName: 'Extract Features',
	name: 'extractFeatures',
	icon: { light: 'file:extractFeatures.svg', dark: 'file:extractFeatures.dark.svg' },
	group: ['transform'],
	version: 1,
	subtitle: backboneSubtitle(),
	description: 'Turn images or texts into feature vectors (embeddings) with a pretrained network',
	defaults: { name: 'Extract Features' },
	inputs: ['main'],
	outputs: ['main'],
	credentials: [modelHostCredential],
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
			description: 'What each item brings: an image (attached or by URL) or a text',
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
					displayName: 'L2-Normalise Features',
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
					description: 'Field that receives the feature vector (a list of numbers); Fine-Tune Head and Classify read it with Input set to Features from Extract Features',
				},
				{ ...resizeModeOption, displayOptions: { show: { '/inputType': ['image'] } } },
			],
		},
	],
};
