/**
 * Runs community nodes through n8n's real execution engine (n8n-core's WorkflowExecute), in
 * process: parameters with expressions, binary data, Continue On Fail, paired items, as n8n does.
 */
import { randomUUID } from 'node:crypto';
import { ExecutionLifecycleHooks, WorkflowExecute } from 'n8n-core';
import {
	Workflow,
	type IDataObject,
	type IExecuteFunctions,
	type INodeExecutionData,
	type INodeParameters,
	type INodeType,
	type INodeTypes,
	type IRun,
	type IWorkflowExecuteAdditionalData,
} from 'n8n-workflow';
import { Classify } from '../../nodes/Classify/Classify.node';
import { ExtractFeatures } from '../../nodes/ExtractFeatures/ExtractFeatures.node';
import { FineTuneHead } from '../../nodes/FineTuneHead/FineTuneHead.node';

/** Emits the items a test hands it, the way a trigger or a Read Files node would. */
class ItemsSource implements INodeType {
	static items: INodeExecutionData[] = [];

	description = {
		displayName: 'Items Source',
		name: 'itemsSource',
		group: ['input'],
		version: 1,
		description: 'Test input',
		defaults: { name: 'Items Source' },
		inputs: [],
		outputs: ['main'],
		properties: [],
	} as unknown as INodeType['description'];

	async execute(): Promise<INodeExecutionData[][]> {
		return [ItemsSource.items];
	}
}

const PACKAGE = 'n8n-nodes-transfer-learning';
const types: Record<string, INodeType> = {
	[`${PACKAGE}.extractFeatures`]: new ExtractFeatures(),
	[`${PACKAGE}.fineTuneHead`]: new FineTuneHead(),
	[`${PACKAGE}.classify`]: new Classify(),
	'test.itemsSource': new ItemsSource(),
};

export interface NodeRun {
	/** Items per output of the node under test. */
	outputs: INodeExecutionData[][];
	/** The error n8n recorded when the node failed (and Continue On Fail was off). */
	error?: { message: string; description?: string | null; context?: IDataObject };
	/** The node's own execute(): after a stopped run it goes on until the node gives up. */
	nodeSettled: Promise<PromiseSettledResult<unknown>>;
}

export function imageItem(bytes: Buffer, json: IDataObject = {}, fileName = 'image.jpg', mimeType = 'image/jpeg'): INodeExecutionData {
	return { json, binary: { data: { data: bytes.toString('base64'), mimeType, fileName } } };
}

export async function runNode(
	type: 'extractFeatures' | 'fineTuneHead' | 'classify',
	parameters: INodeParameters,
	items: INodeExecutionData[],
	options: { continueOnFail?: boolean; errorOutput?: boolean; stopWhen?: Promise<unknown> } = {},
): Promise<NodeRun> {
	ItemsSource.items = items;
	const typeName = `${PACKAGE}.${type}`;
	let nodeExecution: Promise<unknown> = Promise.resolve();
	const nodeType = types[typeName];
	const observed: INodeType = Object.assign(Object.create(nodeType) as INodeType, {
		execute(this: IExecuteFunctions) {
			return (nodeExecution = nodeType.execute!.call(this));
		},
	});
	const typeOf = (name: string) => (name === typeName ? observed : types[name]);
	const nodeTypes = { getByName: typeOf, getByNameAndVersion: typeOf, getKnownTypes: () => ({}) } as INodeTypes;
	const nodeName = 'Under Test';
	const workflow = new Workflow({
		id: randomUUID(),
		nodes: [
			{ id: randomUUID(), name: 'Source', type: 'test.itemsSource', typeVersion: 1, position: [0, 0], parameters: {} },
			{
				id: randomUUID(),
				name: nodeName,
				type: typeName,
				typeVersion: 1,
				position: [200, 0],
				parameters,
				...(options.continueOnFail ? { onError: 'continueRegularOutput' as const } : {}),
				...(options.errorOutput ? { onError: 'continueErrorOutput' as const } : {}),
			},
		],
		connections: { Source: { main: [[{ node: nodeName, type: 'main', index: 0 }]] } },
		active: false,
		nodeTypes,
	});
	let finished!: (run: IRun) => void;
	const done = new Promise<IRun>((resolve) => (finished = resolve));
	const hooks = new ExecutionLifecycleHooks('manual', randomUUID(), { id: workflow.id, name: 'test', nodes: [], connections: {}, active: false, activeVersionId: null, isArchived: false, createdAt: new Date(), updatedAt: new Date() } as never);
	hooks.addHandler('workflowExecuteAfter', async (run) => finished(run));
	const additionalData = {
		hooks,
		credentialsHelper: {},
		executeWorkflow: async () => ({ data: [] }),
		restApiUrl: 'http://127.0.0.1:5678/rest',
		webhookBaseUrl: 'http://127.0.0.1:5678/webhook',
		webhookWaitingBaseUrl: 'http://127.0.0.1:5678/webhook-waiting',
		webhookTestBaseUrl: 'http://127.0.0.1:5678/webhook-test',
		formWaitingBaseUrl: 'http://127.0.0.1:5678/form-waiting',
		instanceBaseUrl: 'http://127.0.0.1:5678/',
		currentNodeExecutionIndex: 0,
		variables: {},
		logAiEvent: async () => {},
	} as unknown as IWorkflowExecuteAdditionalData;
	const running = new WorkflowExecute(additionalData, 'manual').run({ workflow, startNode: workflow.getNode('Source')! });
	// As the editor's Stop button does: n8n ends the run at once and aborts its cancel signal.
	void options.stopWhen?.then(() => running.cancel());
	const run = await Promise.race([running.then(() => done), done]);
	const task = run.data.resultData.runData[nodeName]?.[0];
	const error = task?.error ?? run.data.resultData.error;
	return {
		outputs: (task?.data?.main ?? []).map((items: INodeExecutionData[] | null) => items ?? []),
		nodeSettled: Promise.allSettled([nodeExecution]).then(([settled]) => settled),
		error: error ? { message: error.message, description: (error as { description?: string }).description, context: (error as { context?: IDataObject }).context } : undefined,
	};
}
