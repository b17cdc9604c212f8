import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { TextBackboneSpec } from '../backbones/catalog';
import { TransferLearningError } from '../errors';
import type { BackendChoice } from '../settings';
import type { TextEncoder } from './encoder';
import type { WorkerReply, WorkerRequest, WorkerSetup } from './use-lite-worker';

const DIMENSION = 512;
/**
 * Chunks posted to one worker and not yet answered: two keep it busy while the main thread handles
 * a reply; callers past this wait for a place rather than piling up messages.
 */
const MAX_PENDING_PER_WORKER = 2;
/** Each worker holds its own copy of TF.js, the model and a wasm heap: about 150 MB of memory. */
const MAX_WORKERS = 4;
/**
 * Workers end after this long without a call and start again on the next (about a second): a
 * webhook called more often never waits for them, an idle n8n gets their memory back.
 */
const IDLE_MS = 5 * 60_000;

const disposedError = () => new Error('Text encoder was disposed');

interface Pending {
	resolve(vectors: Float32Array[]): void;
	reject(error: Error): void;
	count: number;
}

class PoolWorker {
	readonly pending = new Map<number, Pending>();
	/** The backend the worker's encoder runs on, once it has loaded; rejects when loading failed. */
	readonly ready: Promise<string>;
	private readonly thread: Worker;
	private broken: Error | undefined;
	private settleReady!: (result: string | Error) => void;

	/** `onLost` hears of a thread that failed or stopped by itself, not of one that `stop` ended. */
	constructor(setup: WorkerSetup, onLost: (error: Error) => void) {
		this.ready = new Promise((resolve, reject) => (this.settleReady = (result) => (result instanceof Error ? reject(result) : resolve(result))));
		this.thread = new Worker(path.join(__dirname, 'use-lite-worker.js'), { workerData: setup });
		this.thread.on('message', (reply: WorkerReply) => {
			if ('ready' in reply) {
				this.settleReady(reply.ready.backendName);
				return this.holdProcess();
			}
			if ('failed' in reply) return this.stop(new TransferLearningError(reply.failed.message, reply.failed.hint));
			const request = this.pending.get(reply.id);
			if (!request) return;
			this.pending.delete(reply.id);
			this.holdProcess();
			if ('error' in reply) request.reject(new TransferLearningError(reply.error.message, reply.error.hint));
			else request.resolve(Array.from({ length: request.count }, (_, i) => reply.vectors.subarray(i * DIMENSION, (i + 1) * DIMENSION)));
		});
		const lost = (error: Error) => {
			if (this.broken) return;
			this.fail(error);
			onLost(error);
		};
		this.thread.on('error', (error) => lost(new TransferLearningError(`The text encoder's worker thread failed: ${error.message}`)));
		this.thread.on('exit', (code) => lost(new TransferLearningError(`The text encoder's worker thread stopped (exit code ${code})`)));
	}

	/** An idle worker does not keep the process alive; one with work does, or a script awaiting it would exit. */
	private holdProcess(): void {
		if (this.pending.size) this.thread.ref();
		else this.thread.unref();
	}

	private fail(error: Error): void {
		this.broken ??= error;
		this.settleReady(this.broken);
		for (const request of this.pending.values()) request.reject(this.broken);
		this.pending.clear();
	}

	stop(error: Error): void {
		this.fail(error);
		void this.thread.terminate();
	}

	send(id: number, texts: string[]): Promise<Float32Array[]> {
		if (this.broken) return Promise.reject(this.broken);
		return new Promise((resolve, reject) => {
			this.pending.set(id, { resolve, reject, count: texts.length });
			this.holdProcess();
			this.thread.postMessage({ id, texts } satisfies WorkerRequest);
		});
	}
}

export interface PoolOptions {
	/** Worker threads; `UseLitePool.defaultSize()` if not given. */
	size?: number;
	backend?: BackendChoice;
	/** How long the workers stay up without a call. */
	idleMs?: number;
}

/**
 * Universal Sentence Encoder Lite on worker threads, each with its own TF.js backend, so that
 * encoding never blocks the event loop n8n serves its HTTP requests on. A batch is split across
 * the workers. They start on the first call after `load` or after an idle spell, and end after
 * `idleMs` without a call, or on dispose.
 */
export class UseLitePool implements TextEncoder {
	readonly dimension = DIMENSION;
	private backend = '';
	private running: Promise<PoolWorker[]> | undefined;
	private activeCalls = 0;
	private idleTimer: NodeJS.Timeout | undefined;
	private freeSlots: number;
	private readonly waiting: (() => void)[] = [];
	private nextId = 0;
	private disposed = false;

	private constructor(
		readonly spec: TextBackboneSpec,
		private readonly setup: WorkerSetup,
		private readonly size: number,
		private readonly idleMs: number,
	) {
		this.freeSlots = size * MAX_PENDING_PER_WORKER;
	}

	get backendName(): string {
		return this.backend;
	}

	/** One worker per core that n8n's event loop leaves spare: a second on two cores slows both down. */
	static defaultSize(): number {
		return Math.max(1, Math.min(MAX_WORKERS, availableParallelism() - 1));
	}

	/** Starts the workers once, so that a model that cannot load fails here. */
	static async load(spec: TextBackboneSpec, options: PoolOptions = {}): Promise<UseLitePool> {
		const pool = new UseLitePool(spec, { spec, backend: options.backend }, options.size ?? UseLitePool.defaultSize(), options.idleMs ?? IDLE_MS);
		await pool.start();
		pool.idleAfterwards();
		return pool;
	}

	private start(): Promise<PoolWorker[]> {
		const workers = Array.from({ length: this.size }, () => new PoolWorker(this.setup, (error) => this.stopWorkers(running, error)));
		const running: Promise<PoolWorker[]> = Promise.all(workers.map((w) => w.ready)).then(
			([backend]) => {
				this.backend = backend;
				return workers;
			},
			(error) => {
				for (const w of workers) w.stop(error);
				if (this.running === running) this.running = undefined;
				throw error;
			},
		);
		this.running = running;
		return running;
	}

	/** Ends the workers of `set` if they are still the pool's, rejecting what they had in hand. */
	private stopWorkers(set = this.running, error: Error = disposedError()): void {
		if (!set || set !== this.running) return;
		this.running = undefined;
		set.then((workers) => workers.forEach((w) => w.stop(error))).catch(() => {});
	}

	private idleAfterwards(): void {
		clearTimeout(this.idleTimer);
		if (this.activeCalls || this.disposed) return;
		// Unref'd: an idle pool does not keep the process alive.
		this.idleTimer = setTimeout(() => this.stopWorkers(), this.idleMs).unref();
	}

	/** Waits for a place among the chunks in flight; the returned function gives it back. */
	private async slot(): Promise<() => void> {
		// A freed place passes straight to the next in line, so the count stays as it is.
		if (this.freeSlots > 0) this.freeSlots--;
		else await new Promise<void>((resolve) => this.waiting.push(resolve));
		return () => {
			const next = this.waiting.shift();
			if (next) next();
			else this.freeSlots++;
		};
	}

	async embed(texts: string[]): Promise<Float32Array[]> {
		if (this.disposed) throw disposedError();
		if (!texts.length) return [];
		this.activeCalls++;
		clearTimeout(this.idleTimer);
		try {
			const workers = await (this.running ?? this.start());
			// Contiguous chunks, one per worker; a short batch uses fewer workers.
			const chunkSize = Math.ceil(texts.length / workers.length);
			const chunks: string[][] = [];
			for (let start = 0; start < texts.length; start += chunkSize) chunks.push(texts.slice(start, start + chunkSize));
			const parts = await Promise.all(
				chunks.map(async (chunk) => {
					const release = await this.slot();
					try {
						if (this.disposed) throw disposedError();
						const worker = workers.reduce((best, w) => (w.pending.size < best.pending.size ? w : best));
						return await worker.send(this.nextId++, chunk);
					} finally {
						release();
					}
				}),
			);
			return parts.flat();
		} finally {
			this.activeCalls--;
			this.idleAfterwards();
		}
	}

	dispose(): void {
		if (this.disposed) return;
		this.disposed = true;
		clearTimeout(this.idleTimer);
		this.stopWorkers();
		// Callers waiting for a place wake, see the pool disposed and throw.
		for (const wake of this.waiting.splice(0)) wake();
	}
}
