import type { ICredentialType, INodeProperties } from 'n8n-workflow';

/** For backbones kept on a private host: one header sent with every model download. */
export class ModelHostApi implements ICredentialType {
	name = 'modelHostApi';

	displayName = 'Model Host';

	documentationUrl = 'https://github.com/n8n-nodes-transfer-learning/n8n-nodes-transfer-learning#private-model-hosts';

	properties: INodeProperties[] = [
		{
			displayName: 'Header Name',
			name: 'headerName',
			type: 'string',
			default: 'Authorization',
			description: 'Header sent with each model download, for example Authorization or X-API-Key',
		},
		{
			displayName: 'Header Value',
			name: 'headerValue',
			type: 'string',
			typeOptions: { password: true },
			default: '',
			description: 'For a bearer token write "Bearer <token>"',
		},
	];
}
