import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { TextBackboneSpec } from '../catalog';
import { TransferLearningError } from '../errors';
import type { TextEncoder } from './encoder';
import type { WorkerReply, WorkerRequest } from './use-lite-worker';

const DIMENSION = 512;
/** Chunks waiting on one worker; a caller past this waits for a place rather than piling up messages. */
const MAX_PENDING_PER_WORKER = 4;

interface Pending {
	resolve(vectors: Float32Array[]): void;
	reject(error: Error): void;
	count: number;
}

class PoolWorker {
	readonly pending = new Map<number, Pending>();
	/** Settles once the worker has loaded its encoder, or failed to. */
	readonly ready: Promise<void>;
	private broken: Error | undefined;
	private settleReady!: (error?: Error) => void;

	constructor(
		readonly thread: Worker,
		private readonly onFreed: () => void,
	) {
		this.ready = new Promise((resolve, reject) => (this.settleReady = (error) => (error ? reject(error) : resolve())));
		thread.on('message', (reply: WorkerReply) => {
			if ('ready' in reply) return this.settleReady();
			if ('failed' in reply) return this.fail(new TransferLearningError(reply.failed.message, reply.failed.hint));
			const request = this.pending.get(reply.id);
			if (!request) return;
			this.pending.delete(reply.id);
			if ('error' in reply) request.reject(new TransferLearningError(reply.error.message, reply.error.hint));
			else request.resolve(Array.from({ length: request.count }, (_, i) => reply.vectors.subarray(i * DIMENSION, (i + 1) * DIMENSION)));
			this.onFreed();
		});
		thread.on('error', (error) => this.fail(new TransferLearningError(`The text encoder's worker thread failed: ${error.message}`)));
		thread.on('exit', (code) => this.fail(new TransferLearningError(`The text encoder's worker thread stopped (exit code ${code})`)));
	}

	fail(error: Error): void {
		this.broken ??= error;
		this.settleReady(this.broken);
		for (const request of this.pending.values()) request.reject(this.broken);
		this.pending.clear();
		this.onFreed();
	}

	send(id: number, texts: string[]): Promise<Float32Array[]> {
		if (this.broken) return Promise.reject(this.broken);
		return new Promise((resolve, reject) => {
			this.pending.set(id, { resolve, reject, count: texts.length });
			this.thread.postMessage({ id, texts } satisfies WorkerRequest);
		});
	}
}

/**
 * Universal Sentence Encoder Lite on `size` worker threads, each with its own single-threaded wasm
 * backend: a batch is split across them, so a machine with two cores encodes about twice as fast.
 */
export class UseLitePool implements TextEncoder {
	readonly dimension = DIMENSION;
	readonly backendName = 'wasm';
	private nextId = 0;
	private waiting: (() => void)[] = [];
	private disposed = false;

	private constructor(
		readonly spec: TextBackboneSpec,
		private readonly workers: PoolWorker[],
	) {}

	/** The pool's size for this machine: one worker per core, at most two. */
	static defaultSize(): number {
		return Math.min(2, availableParallelism());
	}

	static async load(spec: TextBackboneSpec, size = UseLitePool.defaultSize()): Promise<UseLitePool> {
		const pool: UseLitePool = new UseLitePool(
			spec,
			Array.from({ length: size }, () => new PoolWorker(new Worker(path.join(__dirname, 'use-lite-worker.js'), { workerData: { spec } }), () => pool.waiting.shift()?.())),
		);
		try {
			await Promise.all(pool.workers.map((w) => w.ready));
		} catch (error) {
			pool.dispose();
			throw error;
		}
		return pool;
	}

	async embed(texts: string[]): Promise<Float32Array[]> {
		if (this.disposed) throw new Error('Text encoder was disposed');
		if (!texts.length) return [];
		// Contiguous chunks, one per worker, the least busy first; a short batch uses fewer workers.
		const chunkSize = Math.ceil(texts.length / this.workers.length);
		const chunks: string[][] = [];
		for (let start = 0; start < texts.length; start += chunkSize) chunks.push(texts.slice(start, start + chunkSize));
		const workers = [...this.workers].sort((a, b) => a.pending.size - b.pending.size).slice(0, chunks.length);
		while (workers.some((w) => w.pending.size >= MAX_PENDING_PER_WORKER)) await new Promise<void>((resolve) => this.waiting.push(resolve));
		if (this.disposed) throw new Error('Text encoder was disposed');
		const parts = await Promise.all(chunks.map((chunk, i) => workers[i].send(this.nextId++, chunk)));
		return parts.flat();
	}

	dispose(): void {
		if (this.disposed) return;
		this.disposed = true;
		for (const worker of this.workers) {
			worker.fail(new Error('Text encoder was disposed'));
			void worker.thread.terminate();
		}
		for (const wake of this.waiting.splice(0)) wake();
	}
}
