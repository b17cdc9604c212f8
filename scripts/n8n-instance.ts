/**
 * A real n8n with this package installed the way n8n's community-package installer does it.
 * Used by `npm start` and by the end-to-end tests. Needs `scripts/runtime.sh` to have put Node 24
 * on PATH and installed the pinned n8n (TL_N8N_BIN).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import axios, { type AxiosInstance } from 'axios';

// A fresh connection per request to n8n: a kept-alive socket that n8n closes as idle just as a
// request reuses it fails with ECONNRESET, which its event loop, busy with a model, makes likelier.
axios.defaults.httpAgent = new http.Agent({ keepAlive: false });

const run = promisify(execFile);
const REPO_ROOT = path.resolve(__dirname, '..', '..');
const PACKAGE_NAME = 'n8n-nodes-transfer-learning';

export const OWNER = { email: 'owner@example.com', firstName: 'Local', lastName: 'Owner', password: 'Transfer-Learning-1' };

export interface StartOptions {
	/** Holds `.n8n/` (database, settings, community packages, model store). */
	userFolder: string;
	port: number;
	/** The task runner broker listens here; must be free as well. */
	brokerPort: number;
	/** Folders the Read/Write Files node may read (n8n 2.x restricts file access). */
	readableFolders?: string[];
	env?: Record<string, string>;
	/** Each line n8n prints; default: discarded. */
	log?: (line: string) => void;
	/** Queue mode: executions go through Redis to workers, state lives in PostgreSQL. */
	queue?: QueueMode;
	/** Starts `n8n worker` instead of the main process (queue mode only); `port` is then its health server's. */
	worker?: { concurrency: number };
}

/** What the main process and every worker of one queue-mode n8n share. */
export interface QueueMode {
	redisPort: number;
	/** n8n's database; its user is trusted on loopback (no password). */
	postgres: { port: number; database: string; user: string };
	/** Workers decrypt what the main process encrypted: the same key everywhere. */
	encryptionKey: string;
}

function n8nBin(): string {
	const bin = process.env.TL_N8N_BIN;
	if (!bin) throw new Error('TL_N8N_BIN is not set: run through scripts/runtime.sh (npm start, npm run test:e2e)');
	return bin;
}

/** n8n with telemetry, update checks, templates and every module that calls out turned off. */
function n8nEnvironment(options: StartOptions): NodeJS.ProcessEnv {
	return {
		...process.env,
		N8N_USER_FOLDER: options.userFolder,
		N8N_PORT: String(options.port),
		N8N_LISTEN_ADDRESS: '127.0.0.1',
		N8N_HOST: '127.0.0.1',
		N8N_PROTOCOL: 'http',
		N8N_EDITOR_BASE_URL: `http://127.0.0.1:${options.port}/`,
		N8N_WEBHOOK_URL: `http://127.0.0.1:${options.port}/`,
		N8N_SECURE_COOKIE: 'false',
		N8N_RUNNERS_BROKER_PORT: String(options.brokerPort),
		N8N_DIAGNOSTICS_ENABLED: 'false',
		N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
		N8N_TEMPLATES_ENABLED: 'false',
		N8N_PERSONALIZATION_ENABLED: 'false',
		N8N_HIRING_BANNER_ENABLED: 'false',
		N8N_DISABLED_MODULES: 'insights,external-secrets,mcp,mcp-registry,chat-hub,workflow-builder,instance-ai,agents,agent-evals,quick-connect,promotions,instance-registry,instance-reporting',
		N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS: 'false',
		N8N_RESTRICT_FILE_ACCESS_TO: (options.readableFolders ?? []).join(';'),
		DB_SQLITE_POOL_SIZE: '2',
		...(options.queue ? queueEnvironment(options) : {}),
		...options.env,
	};
}

/** n8n's scaling settings (@n8n/config's scaling-mode and database configs). */
function queueEnvironment({ queue, worker, port }: StartOptions): NodeJS.ProcessEnv {
	const { redisPort, postgres, encryptionKey } = queue!;
	return {
		EXECUTIONS_MODE: 'queue',
		QUEUE_BULL_REDIS_HOST: '127.0.0.1',
		QUEUE_BULL_REDIS_PORT: String(redisPort),
		DB_TYPE: 'postgresdb',
		DB_POSTGRESDB_HOST: '127.0.0.1',
		DB_POSTGRESDB_PORT: String(postgres.port),
		DB_POSTGRESDB_DATABASE: postgres.database,
		DB_POSTGRESDB_USER: postgres.user,
		N8N_ENCRYPTION_KEY: encryptionKey,
		// Manual runs (Train Now) go to the workers too, as they will in n8n 3.
		OFFLOAD_MANUAL_EXECUTIONS_TO_WORKERS: 'true',
		...(worker ? { QUEUE_HEALTH_CHECK_ACTIVE: 'true', QUEUE_HEALTH_CHECK_PORT: String(port), N8N_WORKER_SERVER_ADDRESS: '127.0.0.1' } : {}),
	};
}

/**
 * Builds the package tarball and installs it into `<userFolder>/.n8n/nodes` exactly as n8n's
 * installer does: unpack, drop dev/peer/optional dependencies, then a shallow install with no
 * scripts and no lockfile.
 */
export async function installPackage(userFolder: string): Promise<string> {
	const nodesDir = path.join(userFolder, '.n8n', 'nodes');
	const target = path.join(nodesDir, 'node_modules', PACKAGE_NAME);
	await fs.mkdir(nodesDir, { recursive: true });
	const { stdout } = await run('npm', ['pack', '--quiet', '--pack-destination', nodesDir, REPO_ROOT], { cwd: nodesDir });
	const tarball = path.join(nodesDir, stdout.trim().split('\n').pop()!);
	try {
		await fs.rm(target, { recursive: true, force: true });
		await fs.mkdir(target, { recursive: true });
		await run('tar', ['-xzf', tarball, '-C', target, '--strip-components=1']);
		const manifestPath = path.join(target, 'package.json');
		const { devDependencies: _d, peerDependencies: _p, optionalDependencies: _o, ...manifest } = JSON.parse(await fs.readFile(manifestPath, 'utf8'));
		await fs.writeFile(manifestPath, JSON.stringify(manifest, null, 2));
		await run('npm', ['install', '--audit=false', '--fund=false', '--bin-links=false', '--install-strategy=shallow', '--ignore-scripts=true', '--package-lock=false'], { cwd: target });
		// n8n keeps its community packages listed here; its installer writes the same entry.
		await fs.writeFile(path.join(nodesDir, 'package.json'), JSON.stringify({ name: 'installed-nodes', private: true, dependencies: { [PACKAGE_NAME]: manifest.version } }, null, 2));
	} finally {
		await fs.rm(tarball, { force: true });
	}
	return target;
}

export const EXAMPLES_DIR = path.join(REPO_ROOT, 'examples');

/** The ids the example workflows carry in `examples/`. */
export const EXAMPLE_IDS = {
	train: 'tlExampleTrain01',
	classify: 'tlExampleClassif',
	retrain: 'tlExampleRetrain',
	route: 'tlExampleRouteBy',
	classifyTickets: 'tlExampleTickets',
	trainTickets: 'tlExampleTrainTx',
	routeTickets: 'tlExampleRouteTx',
};

/** Published (live) from the first start: the webhooks. The schedule waits for the user. */
export const PUBLISHED_EXAMPLES = [EXAMPLE_IDS.classify, EXAMPLE_IDS.route, EXAMPLE_IDS.classifyTickets, EXAMPLE_IDS.routeTickets];

/** The labelled texts the ticket example trains on: beside the training images. */
export function ticketsCsv(trainingFolder: string): string {
	return path.join(path.dirname(trainingFolder), 'training-texts', 'tickets.csv');
}

/** The example workflows, with the folder the Train and Retrain examples read set to `trainingFolder`, and the ticket CSV beside it. */
export async function prepareExamples(outDir: string, trainingFolder: string): Promise<string[]> {
	await fs.mkdir(outDir, { recursive: true });
	const files: string[] = [];
	for (const name of (await fs.readdir(EXAMPLES_DIR)).filter((f) => f.endsWith('.json')).sort()) {
		const workflow = JSON.parse(await fs.readFile(path.join(EXAMPLES_DIR, name), 'utf8')) as { nodes: { type: string; parameters: Record<string, unknown> }[] };
		for (const node of workflow.nodes) {
			if (node.type === 'n8n-nodes-base.readWriteFile') {
				const csv = String(node.parameters.fileSelector).endsWith('.csv');
				node.parameters.fileSelector = csv ? ticketsCsv(trainingFolder) : `${trainingFolder}/*/*.{jpg,jpeg,png,webp}`;
			}
		}
		const file = path.join(outDir, name);
		await fs.writeFile(file, JSON.stringify(workflow, null, 2));
		files.push(file);
	}
	return files;
}

/**
 * Imports workflow files into the instance's database (before it starts), in one n8n command: each
 * command boots n8n's CLI, which costs seconds. Returns their ids.
 */
export async function importWorkflows(options: StartOptions, files: string[]): Promise<string[]> {
	const workflows = await Promise.all(files.map(async (file) => JSON.parse(await fs.readFile(file, 'utf8')) as { id?: string }));
	workflows.forEach((workflow, i) => {
		if (!workflow.id) throw new Error(`${files[i]} has no id`);
	});
	// n8n reads a file holding an array as that many workflows.
	const bundle = path.join(options.userFolder, 'import-workflows.json');
	await fs.writeFile(bundle, JSON.stringify(workflows));
	try {
		await run(n8nBin(), ['import:workflow', `--input=${bundle}`], { env: n8nEnvironment(options) });
	} finally {
		await fs.rm(bundle, { force: true });
	}
	return workflows.map((workflow) => workflow.id!);
}

/** Publishes (activates) workflows before start, so their webhooks and schedules are live at once. */
export async function publishWorkflows(options: StartOptions, ids: string[]): Promise<void> {
	for (const id of ids) await run(n8nBin(), ['publish:workflow', `--id=${id}`], { env: n8nEnvironment(options) });
}

export interface N8nExit {
	code: number | null;
	signal: NodeJS.Signals | null;
}

export class RunningN8n {
	readonly url: string;
	readonly api: AxiosInstance;
	/** Settles when the n8n process exits, for whatever reason. */
	readonly exited: Promise<N8nExit>;
	/** n8n's last 200 lines, for error messages. */
	private readonly output: string[] = [];

	constructor(
		readonly options: StartOptions,
		private readonly child: ChildProcess,
	) {
		this.url = `http://127.0.0.1:${options.port}/`;
		this.api = axios.create({ baseURL: `${this.url}rest/`, validateStatus: () => true });
		this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
		const onData = (chunk: Buffer) => {
			for (const line of chunk.toString('utf8').split('\n')) {
				if (!line.trim()) continue;
				this.output.push(line);
				if (this.output.length > 200) this.output.shift();
				options.log?.(line);
			}
		};
		child.stdout!.on('data', onData);
		child.stderr!.on('data', onData);
	}

	get pid(): number {
		return this.child.pid!;
	}

	/** Resolves once n8n's REST API answers; if n8n exits first or is not ready in time, stops it and throws with its output. */
	async ready(timeoutSeconds = 180): Promise<void> {
		let exit: N8nExit | undefined;
		void this.exited.then((e) => (exit = e));
		const deadline = Date.now() + timeoutSeconds * 1000;
		while (Date.now() < deadline) {
			if (exit) {
				await this.stop();
				throw new Error(`n8n ${describeExit(exit)} while starting:\n${this.output.join('\n')}`);
			}
			const health = await this.api.get('../healthz/readiness', { timeout: 2000 }).catch(() => undefined);
			if (health?.status === 200) return;
			await sleep(500);
		}
		await this.stop();
		throw new Error(`n8n did not become ready within ${timeoutSeconds} s:\n${this.output.join('\n')}`);
	}

	/** Creates the owner account (first start) and logs in; later REST calls carry the session. */
	async signIn(): Promise<void> {
		const setup = await this.api.post('owner/setup', OWNER);
		if (setup.status >= 400 && !/already/i.test(JSON.stringify(setup.data))) {
			throw new Error(`owner setup failed: HTTP ${setup.status} ${JSON.stringify(setup.data)}`);
		}
		const login = await this.api.post('login', { emailOrLdapLoginId: OWNER.email, password: OWNER.password });
		if (login.status !== 200) throw new Error(`login failed: HTTP ${login.status} ${JSON.stringify(login.data)}`);
		const cookie = (login.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]).join('; ');
		this.api.defaults.headers.common.Cookie = cookie;
		// n8n rejects state-changing REST calls without the browser-id header that the editor sends.
		this.api.defaults.headers.common['browser-id'] = 'transfer-learning-e2e';
	}

	/** Starts a workflow from its trigger node, as the editor's button does; returns the execution's id. */
	async runWorkflow(id: string, trigger = 'Train Now'): Promise<string> {
		const response = await this.api.post(`workflows/${id}/run`, { triggerToStartFrom: { name: trigger } });
		if (response.status !== 200) throw new Error(`running workflow ${id} failed: HTTP ${response.status} ${JSON.stringify(response.data)}`);
		return response.data.data.executionId as string;
	}

	/** An execution's status: new, running, waiting, success, error, ... */
	async executionStatus(id: string): Promise<string | undefined> {
		const { data } = await this.api.get(`executions/${id}`);
		return data?.data?.status;
	}

	/** Waits until an execution has ended; returns how it ended. */
	finished(id: string, seconds: number): Promise<string> {
		return waitFor(`execution ${id}`, async () => {
			const status = await this.executionStatus(id);
			return status && !['new', 'running', 'waiting'].includes(status) ? status : undefined;
		}, seconds);
	}

	/**
	 * Stops n8n and its task runner: n8n runs in a process group of its own (it is spawned detached),
	 * which gets SIGTERM, and SIGKILL for whatever is left after 20 s. Also cleans up a task runner
	 * that outlived an n8n that died.
	 */
	async stop(): Promise<void> {
		this.signalGroup('SIGTERM');
		if (!(await this.groupGone(20_000))) {
			this.signalGroup('SIGKILL');
			await this.groupGone(5_000);
		}
		await this.exited;
	}

	private signalGroup(signal: NodeJS.Signals): void {
		try {
			process.kill(-this.pid, signal);
		} catch {
			// the group is gone
		}
	}

	private async groupGone(timeoutMs: number): Promise<boolean> {
		const deadline = Date.now() + timeoutMs;
		for (;;) {
			try {
				process.kill(-this.pid, 0);
			} catch {
				return true;
			}
			if (Date.now() > deadline) return false;
			await sleep(100);
		}
	}
}

/** Polls `probe` every quarter second until it gives a value; throws after `seconds`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, seconds: number): Promise<T> {
	const deadline = Date.now() + seconds * 1000;
	while (Date.now() < deadline) {
		const value = await probe();
		if (value !== undefined) return value;
		await sleep(250);
	}
	throw new Error(`timed out after ${seconds} s waiting for ${what}`);
}

export function describeExit({ code, signal }: N8nExit): string {
	return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts n8n (or a queue-mode worker) in a process group of its own and returns at once; `ready()` waits for it. */
export function spawnN8n(options: StartOptions): RunningN8n {
	const command = options.worker ? ['worker', `--concurrency=${options.worker.concurrency}`] : ['start'];
	const child = spawn(n8nBin(), command, { env: n8nEnvironment(options), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
	return new RunningN8n(options, child);
}

/** Starts n8n and resolves once its REST API answers. */
export async function startN8n(options: StartOptions): Promise<RunningN8n> {
	const instance = spawnN8n(options);
	await instance.ready();
	return instance;
}

export async function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const { port } = server.address() as net.AddressInfo;
			server.close(() => resolve(port));
		});
	});
}
