import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { freePort, importWorkflows, installPackage, prepareExamples, publishWorkflows, PUBLISHED_EXAMPLES, type StartOptions } from '../../scripts/n8n-instance';

/**
 * A user's n8n, ready to start: this package installed into `userFolder` as n8n's installer does
 * it, the example workflows imported with their folder set to `trainingFolder` (whose parent n8n
 * may read), their webhooks published. Returns the options to start it with.
 */
export async function setUpExampleN8n(userFolder: string, trainingFolder: string, more: Pick<StartOptions, 'env' | 'log'> = {}): Promise<StartOptions> {
	const started = Date.now();
	const packageDir = await installPackage(userFolder);
	const bytes = Number(execFileSync('du', ['-sb', packageDir], { encoding: 'utf8' }).split('\t')[0]);
	console.log(`# package installed as n8n does it in ${((Date.now() - started) / 1000).toFixed(1)} s, ${(bytes / 1e6).toFixed(0)} MB`);
	const options: StartOptions = { userFolder, port: await freePort(), brokerPort: await freePort(), readableFolders: [path.dirname(trainingFolder)], ...more };
	await importWorkflows(options, await prepareExamples(path.join(path.dirname(userFolder), 'examples'), trainingFolder));
	await publishWorkflows(options, PUBLISHED_EXAMPLES);
	return options;
}
