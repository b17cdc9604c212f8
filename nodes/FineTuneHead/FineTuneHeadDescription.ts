import type { INodeTypeDescription } from 'n8n-workflow';
import { DEFAULT_TRAINING } from '../../engine';
import { backendOption, backboneProperties, batchSizeOption, itemInputProperties, modelHostCredential, precisionOption, resizeModeOption } from '../shared/parameters';

export const fineTuneHeadDescription: INodeTypeDescription = {
	displayName: 'Fine-Tune Head',
	name: 'fineTuneHead',
	icon: { light: 'file:fineTuneHead.svg', dark: 'file:fineTuneHead.dark.svg' },
	group: ['transform'],
	version: 1,
	subtitle: '={{ "Train " + $parameter.modelName }}',
	description: 'Train a classifier on labelled images or texts and save it as a new model version',
	defaults: { name: 'Fine-Tune Head' },
	inputs: ['main'],
	outputs: ['main'],
	credentials: [modelHostCredential],
	properties: [
		{
			displayName: 'Model Name',
			name: 'modelName',
			type: 'string',
			default: 'my-classifier',
			required: true,
			description: 'Each run saves the next version of this model in the model store; Classify uses the latest',
		},
		{
			displayName: 'Label',
			name: 'label',
			type: 'string',
			default: '={{ $json.label }}',
			required: true,
			description: 'The class of each item, usually an expression. Not empty, at most 200 characters, no comma, not "unknown".',
			hint: 'The classes become Classify\'s outputs; e.g. {{ $json.label }}, or the folder name of each file',
		},
		...itemInputProperties(),
		...backboneProperties({ inputType: ['image', 'features'] }, { inputType: ['text'] }),
		{
			displayName: 'Training Options',
			name: 'training',
			type: 'collection',
			placeholder: 'Add Option',
			default: {},
			options: [
				{ displayName: 'Class Weights', name: 'classWeights', type: 'options', options: [
					{ name: 'Balanced', value: 'balanced', description: 'Rare classes count as much as common ones' },
					{ name: 'None', value: 'none' },
				], default: DEFAULT_TRAINING.classWeights, description: 'How much each class counts in the loss. Balanced helps when some classes have far fewer examples than others.' },
				{ displayName: 'Dropout', name: 'dropout', type: 'number', typeOptions: { minValue: 0, maxValue: 0.95, numberPrecision: 2 }, default: DEFAULT_TRAINING.dropout, description: 'Share of features dropped at random at each training step, so the head does not learn the few training examples by heart. Lower it for large datasets.' },
				{ displayName: 'Epochs (Maximum)', name: 'epochs', type: 'number', typeOptions: { minValue: 1 }, default: DEFAULT_TRAINING.epochs, description: 'Training stops earlier when the validation loss stops improving' },
				{ displayName: 'Hidden Units', name: 'hiddenUnits', type: 'number', typeOptions: { minValue: 0 }, default: DEFAULT_TRAINING.hiddenUnits, description: '0 trains a linear head, fitted on all examples at once with its regularisation chosen on the validation split (Dropout, Epochs, Learning Rate, Patience and Training Batch Size then do not apply); e.g. 128 adds a hidden layer for harder problems, trained in mini-batches' },
				{ displayName: 'Learning Rate', name: 'learningRate', type: 'number', typeOptions: { minValue: 0, numberPrecision: 5 }, default: DEFAULT_TRAINING.learningRate, description: 'Step size of the Adam optimiser. Lower it if the loss curve in the report jumps about; raise it if training needs many epochs.' },
				{ displayName: 'Patience', name: 'patience', type: 'number', typeOptions: { minValue: 1 }, default: DEFAULT_TRAINING.patience, description: 'Epochs without improvement before stopping' },
				{ displayName: 'Seed', name: 'seed', type: 'number', default: DEFAULT_TRAINING.seed, description: 'The same data and seed give the same model' },
				{ displayName: 'Training Batch Size', name: 'batchSize', type: 'number', typeOptions: { minValue: 1 }, default: DEFAULT_TRAINING.batchSize, description: 'Examples per step when training the head (raised so that an epoch takes at most 16 steps). Not the same as Options → Batch Size, which is how many images or texts the backbone reads at once.' },
				{ displayName: 'Validation Split', name: 'validationSplit', type: 'number', typeOptions: { minValue: 0, maxValue: 0.9, numberPrecision: 2 }, default: DEFAULT_TRAINING.validationSplit, description: 'Share of each class held out to choose the epoch count and report metrics; the saved model then learns from all examples' },
			],
		},
		{
			displayName: 'Options',
			name: 'options',
			type: 'collection',
			placeholder: 'Add Option',
			default: {},
			options: [
				{
					displayName: 'Augmentation',
					name: 'augmentation',
					type: 'boolean',
					default: false,
					description:
						"Whether to also train on each image's mirror image and four zoomed corner crops (images only). Each image then goes through the backbone 6 times, so feature extraction takes about 6 times as long. Pairs with Classify's Test-Time Averaging.",
				},
				backendOption,
				{ ...batchSizeOption, description: `${batchSizeOption.description}. Training has its own Training Batch Size.` },
				precisionOption,
				{ displayName: 'L2-Normalise Features', name: 'l2Normalize', type: 'boolean', default: false, description: 'Whether to scale feature vectors to length 1 before training (Classify does the same). Features Extract Features normalised count as normalised.' },
				{ displayName: 'Output Model File', name: 'outputModelFile', type: 'boolean', default: false, description: 'Whether to attach the trained model as one binary file, to keep in S3, Drive or a database' },
				{ displayName: 'Include History', name: 'includeHistory', type: 'boolean', default: false, description: 'Whether to add "history": loss and accuracy of every epoch. The report picture shows them as curves either way.' },
				{ displayName: 'Model File Property', name: 'modelBinaryProperty', type: 'string', default: 'model', description: 'Binary property that receives the model file', displayOptions: { show: { outputModelFile: [true] } } },
				{ ...resizeModeOption, description: 'For features from Extract Features, the mode they were made with is saved with the model; set here, it must be the same' },
			],
		},
	],
};
