/**
 * n8n in queue mode, as the README's "Scaling out" section sets it up: PostgreSQL and Redis, one
 * main process (editor, REST API, webhooks) and workers (executions), each with a user folder of
 * its own and the package installed there, sharing no folder. Models live in n8n's database
 * (TL_MODEL_STORE=n8n-database); each worker keeps its own backbone cache.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Client } from 'pg';
import {
	EXAMPLE_IDS,
	freePort,
	importWorkflows,
	installPackage,
	prepareExamples,
	publishWorkflows,
	startN8n,
	type QueueMode,
	type RunningN8n,
	type StartOptions,
} from '../../scripts/n8n-instance';
import { startPostgres, startRedis, type Postgres, type Service } from './services';

export { EXAMPLE_IDS };

export interface ClusterOptions {
	/** Holds every process's user folder and the prepared example workflows. */
	dir: string;
	/** Training images, one folder per class; readable by every worker. */
	trainingFolder: string;
	mirror: string;
	workers: number;
	concurrency: number;
	/** Added to every process's environment (n8n's execution-saving settings, say). */
	env?: Record<string, string>;
}

/**
 * The Train and Classify examples only: each import or publish is a whole n8n start-up, and these
 * tests need no other workflow. Publish EXAMPLE_IDS.classify.
 */
export async function trainAndClassifyExamples(dir: string, trainingFolder: string): Promise<string[]> {
	const files = await prepareExamples(dir, trainingFolder);
	return files.filter((file) => [EXAMPLE_IDS.train, EXAMPLE_IDS.classify].includes(JSON.parse(readFileSync(file, 'utf8')).id));
}

export class Cluster {
	/** Each process's log lines, main first, for telling which worker ran an execution. */
	readonly logs: string[][];

	private constructor(
		public main: RunningN8n,
		public workers: RunningN8n[],
		readonly postgres: Postgres,
		readonly redis: Service,
		readonly database: string,
		logs: string[][],
		private readonly mainOptions: StartOptions,
		private readonly workerOptions: StartOptions[],
	) {
		this.logs = logs;
	}

	/** Stops every n8n process and starts them again with `env` added, on the same database, Redis and user folders. */
	async restart(env: Record<string, string>): Promise<void> {
		await Promise.all([this.main, ...this.workers].map((n) => n.stop()));
		const withEnv = (o: StartOptions) => ({ ...o, env: { ...o.env, ...env } });
		this.main = await startN8n(withEnv(this.mainOptions));
		await this.main.signIn();
		this.workers = await Promise.all(this.workerOptions.map((o) => startN8n(withEnv(o))));
	}

	static async start(options: ClusterOptions): Promise<Cluster> {
		const postgres = await startPostgres();
		const redis = await startRedis().catch(async (error) => {
			await postgres.stop();
			throw error;
		});
		const logs: string[][] = [];
		const started: RunningN8n[] = [];
		try {
			const database = 'n8n';
			const client = new Client({ connectionString: postgres.url() });
			await client.connect();
			await client.query(`CREATE DATABASE ${database}`);
			await client.end();
			const queue: QueueMode = { redisPort: redis.port, postgres: { port: postgres.port, database, user: 'tl' }, encryptionKey: randomBytes(24).toString('hex') };
			const env = { TL_MODEL_STORE: 'n8n-database', TL_MODEL_MIRROR: options.mirror, TL_MODEL_CACHE: '', ...options.env };
			const processOptions = async (name: string, worker?: StartOptions['worker']): Promise<StartOptions> => {
				const log: string[] = [];
				logs.push(log);
				return {
					userFolder: path.join(options.dir, name),
					port: await freePort(),
					brokerPort: await freePort(),
					readableFolders: [path.dirname(options.trainingFolder)],
					env,
					queue,
					worker,
					log: (line) => log.push(line),
				};
			};
			const mainOptions = await processOptions('main');
			const workerOptions = [];
			for (let i = 0; i < options.workers; i++) workerOptions.push(await processOptions(`worker${i + 1}`, { concurrency: options.concurrency }));
			// One after another: npm installs in parallel on two cores are slower, not faster.
			const installing = performance.now();
			for (const o of [mainOptions, ...workerOptions]) await installPackage(o.userFolder);
			console.log(`# the package installed into ${workerOptions.length + 1} user folders in ${((performance.now() - installing) / 1000).toFixed(0)} s`);
			await importWorkflows(mainOptions, await trainAndClassifyExamples(path.join(options.dir, 'examples'), options.trainingFolder));
			await publishWorkflows(mainOptions, [EXAMPLE_IDS.classify]);
			// The main process migrates n8n's database; workers start once it has.
			const main = await startN8n(mainOptions);
			started.push(main);
			await main.signIn();
			const workers = await Promise.all(workerOptions.map((o) => startN8n(o)));
			started.push(...workers);
			console.log(`# n8n in queue mode (main and ${workers.length} workers) ready ${((performance.now() - installing) / 1000).toFixed(0)} s after the installs began`);
			return new Cluster(main, workers, postgres, redis, database, logs, mainOptions, workerOptions);
		} catch (error) {
			await Promise.all(started.map((n) => n.stop()));
			await redis.stop();
			await postgres.stop();
			throw error;
		}
	}

	/** Stops every n8n process, then Redis and PostgreSQL, each by its process group, and removes their folders. */
	async stop(): Promise<void> {
		await Promise.all([this.main, ...this.workers].map((n) => n.stop()));
		await this.redis.stop();
		await this.postgres.stop();
	}

	/** The worker whose log says it started `executionId`, or -1. */
	workerOf(executionId: string): number {
		return this.logs.slice(1).findIndex((log) => log.some((line) => line.includes(`Worker started execution ${executionId} `)));
	}

	/** How many executions each worker has started so far. */
	startedPerWorker(): number[] {
		return this.logs.slice(1).map((log) => log.filter((line) => line.includes('Worker started execution')).length);
	}
}
