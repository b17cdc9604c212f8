/**
 * `npm start`: n8n on http://127.0.0.1:5678 with this package installed the way n8n installs
 * community packages, and the example workflows imported. Ctrl-C stops it.
 *
 * TL_START_FOLDER (default ~/.local/share/n8n-nodes-transfer-learning) keeps n8n's database and
 * the trained models between starts. N8N_PORT changes the port.
 */
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyIntoClassFolders, readDataset } from './dataset';
import {
	OWNER,
	PUBLISHED_EXAMPLES,
	importWorkflows,
	installPackage,
	prepareExamples,
	publishWorkflows,
	startN8n,
	type StartOptions,
} from './n8n-instance';

const DEMO_DATASET = path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'image_datasets', 'flowers5');

async function main() {
	const folder = path.resolve(process.env.TL_START_FOLDER ?? path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'n8n-nodes-transfer-learning'));
	const trainingFolder = path.join(folder, 'files', 'training-images');
	const options: StartOptions = {
		userFolder: folder,
		port: Number(process.env.N8N_PORT ?? 5678),
		brokerPort: Number(process.env.N8N_RUNNERS_BROKER_PORT ?? 5679),
		readableFolders: [path.join(folder, 'files')],
		log: (line) => console.log(`  n8n | ${line}`),
	};
	await fs.mkdir(trainingFolder, { recursive: true });
	if ((await fs.readdir(trainingFolder)).length === 0 && existsSync(DEMO_DATASET)) {
		// Something to train on out of the box: the flowers5 train split, one folder per class.
		await copyIntoClassFolders(trainingFolder, readDataset(DEMO_DATASET).filter((e) => e.split === 'train'));
		console.log(`Copied the flowers5 training images into ${trainingFolder}`);
	}

	console.log('Installing the package into n8n (npm pack, then a shallow install without scripts)...');
	await installPackage(folder);
	const marker = path.join(folder, '.examples-imported');
	if (!existsSync(marker)) {
		console.log('Importing the example workflows...');
		await importWorkflows(options, await prepareExamples(path.join(folder, 'examples'), trainingFolder));
		await publishWorkflows(options, PUBLISHED_EXAMPLES);
		await fs.writeFile(marker, new Date().toISOString());
	}

	console.log('Starting n8n...');
	const started = Date.now();
	const n8n = await startN8n(options);
	await n8n.signIn();
	console.log(`
n8n is ready after ${((Date.now() - started) / 1000).toFixed(0)} s: ${n8n.url}
  log in as ${OWNER.email} / ${OWNER.password}
  model store ${path.join(folder, '.n8n', 'transfer-learning', 'models')}
  training images ${trainingFolder}
  mirror ${process.env.TL_MODEL_MIRROR ?? '(none: backbones download from storage.googleapis.com)'}
Open "Transfer learning: 1. Train…" and run it, then POST an image to ${n8n.url}webhook/classify
Press Ctrl-C to stop.`);

	let stopping = false;
	const stop = async () => {
		if (stopping) return;
		stopping = true;
		console.log('\nStopping n8n...');
		await n8n.stop();
		process.exit(0);
	};
	process.on('SIGINT', stop);
	process.on('SIGTERM', stop);
}

main().catch((error) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
