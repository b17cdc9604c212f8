/**
 * `npm start`: n8n on http://127.0.0.1:5678 with this package installed the way n8n installs
 * community packages, and the example workflows imported. Ctrl-C stops it.
 *
 * TL_START_FOLDER (default ~/.local/share/n8n-nodes-transfer-learning) keeps n8n's database and
 * the trained models between starts. N8N_PORT changes the port.
 *
 * SIGINT, SIGTERM and SIGHUP stop n8n and its task runner, and so does the death of the process that
 * started this one: npm passes SIGINT and SIGTERM on to its script but dies on SIGHUP. If n8n dies on
 * its own, this exits with code 1 and says so.
 */
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyIntoClassFolders, readDataset } from './dataset';
import { writeTrainSplit } from './text-dataset';
import {
	OWNER,
	describeExit,
	PUBLISHED_EXAMPLES,
	importWorkflows,
	installPackage,
	prepareExamples,
	ticketsCsv,
	publishWorkflows,
	spawnN8n,
	type StartOptions,
} from './n8n-instance';

const DEMO_DATASET = path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'image_datasets', 'flowers5');
const DEMO_TEXTS = path.resolve(__dirname, '..', '..', '..', 'shared', 'data', 'text', 'banking77_10intents', 'banking77_10intents.csv');

/** Set once n8n is being stopped on purpose: its exit is then no error. */
let stopping = false;

async function main() {
	const folder = path.resolve(process.env.TL_START_FOLDER ?? path.join(process.env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'n8n-nodes-transfer-learning'));
	const trainingFolder = path.join(folder, 'files', 'training-images');
	const logFile = path.join(folder, '.n8n', 'logs', 'n8n.log');
	const options: StartOptions = {
		userFolder: folder,
		port: Number(process.env.N8N_PORT ?? 5678),
		brokerPort: Number(process.env.N8N_RUNNERS_BROKER_PORT ?? 5679),
		readableFolders: [path.join(folder, 'files')],
		log: (line) => console.log(`  n8n | ${line}`),
		// n8n's own rotating log file, beside what it prints here.
		env: { N8N_LOG_OUTPUT: 'console,file', N8N_LOG_FILE_LOCATION: logFile },
	};
	await fs.mkdir(trainingFolder, { recursive: true });
	if ((await fs.readdir(trainingFolder)).length === 0 && existsSync(DEMO_DATASET)) {
		// Something to train on out of the box: the flowers5 train split, one folder per class.
		await copyIntoClassFolders(trainingFolder, readDataset(DEMO_DATASET).filter((e) => e.split === 'train'));
		console.log(`Copied the flowers5 training images into ${trainingFolder}`);
	}
	if (!existsSync(ticketsCsv(trainingFolder)) && existsSync(DEMO_TEXTS)) {
		const count = await writeTrainSplit(DEMO_TEXTS, ticketsCsv(trainingFolder));
		console.log(`Wrote ${count} labelled support tickets (BANKING77, 10 intents) to ${ticketsCsv(trainingFolder)}`);
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
	const n8n = spawnN8n(options);
	const stop = async (reason: string) => {
		if (stopping) return;
		stopping = true;
		console.log(`\n${reason}: stopping n8n...`);
		await n8n.stop();
		process.exit(0);
	};
	for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stop(signal));
	// npm dies on SIGHUP without passing it on, and this process is handed to init: poll for that.
	const parent = process.ppid;
	setInterval(() => {
		if (process.ppid !== parent) void stop(`the process that started this one (pid ${parent}) is gone`);
	}, 1000).unref();

	await n8n.ready();
	void n8n.exited.then(async (exit) => {
		if (stopping) return;
		stopping = true;
		console.error(`\nn8n (pid ${n8n.pid}) ${describeExit(exit)}; its output is above and in ${logFile}`);
		await n8n.stop();
		process.exit(1);
	});
	await n8n.signIn();
	console.log(`
n8n is ready after ${((Date.now() - started) / 1000).toFixed(0)} s: ${n8n.url}
  log in as ${OWNER.email} / ${OWNER.password}
  model store ${path.join(folder, '.n8n', 'transfer-learning', 'models')}
  training images ${trainingFolder}
  log ${logFile}
  mirror ${process.env.TL_MODEL_MIRROR ?? '(none: backbones download from storage.googleapis.com)'}
Open "Transfer learning: 1. Train…" and run it, then POST an image to ${n8n.url}webhook/classify
Press Ctrl-C to stop.`);
}

main().catch((error) => {
	if (stopping) return;
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
