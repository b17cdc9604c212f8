import type { IAuthenticateGeneric, ICredentialTestRequest, ICredentialType, INodeProperties } from 'n8n-workflow';

/** For backbones kept on a private host: one header sent with every model download. */
export class ModelHostApi implements ICredentialType {
	name = 'modelHostApi';

	displayName = 'Model Host';

	documentationUrl = 'https://github.com/n8n-nodes-transfer-learning/n8n-nodes-transfer-learning#backbones';

	properties: INodeProperties[] = [
		{
			displayName:
				'Needed only for backbones on a host that asks for a header: a custom model URL on a private server, or a private or gated Hugging Face model. The catalog backbones, the bundled text encoder and a mirror need none. The header goes only to the host of the model URL.',
			name: 'notice',
			type: 'notice',
			default: '',
		},
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
			description: 'For a bearer token write "Bearer <token>" (Hugging Face: "Bearer hf_…")',
		},
		{
			displayName: 'Test URL',
			name: 'testUrl',
			type: 'string',
			default: '',
			required: true,
			placeholder: 'https://models.example.com/my-model/model.json',
			description: 'A file on the host that the header unlocks, such as your model.json: n8n downloads it with the header when you save, to check it',
		},
	];

	// Sends the header as the nodes do, so the test checks what a download will meet.
	authenticate: IAuthenticateGeneric = {
		type: 'generic',
		properties: { headers: { '={{ $credentials.headerName }}': '={{ $credentials.headerValue }}' } },
	};

	test: ICredentialTestRequest = {
		request: { url: '={{ $credentials.testUrl }}', method: 'GET' },
	};
}
