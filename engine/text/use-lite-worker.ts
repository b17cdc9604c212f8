/**
 * One Universal Sentence Encoder Lite in a worker thread of UseLitePool, so that tokenising and
 * inference (seconds of synchronous wasm per batch) never hold n8n's event loop. TF.js's threaded
 * wasm build cannot start in Node (it spawns its workers from blob URLs), so parallelism comes from
 * one single-threaded instance per thread. tfjs-node, a native addon, may not load in a worker
 * (tensorflow/tfjs#8388): the backend then falls back as it would on the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { TextBackboneSpec } from '../backbones/catalog';
import { TransferLearningError, errorMessage } from '../errors';
import type { BackendChoice } from '../settings';
import { UseLiteEncoder } from './use-lite';

export interface WorkerSetup {
	spec: TextBackboneSpec;
	backend?: BackendChoice;
}
export type WorkerRequest = { id: number; texts: string[] };
export type WorkerReply =
	| { id: number; vectors: Float32Array }
	| { id: number; error: { message: string; hint?: string } }
	| { ready: { backendName: UseLiteEncoder['backendName'] } }
	| { failed: { message: string; hint?: string } };

const port = parentPort!;
const setup = workerData as WorkerSetup;
const describe = (error: unknown) => ({ message: errorMessage(error), hint: error instanceof TransferLearningError ? error.hint : undefined });

UseLiteEncoder.load(setup.spec, { backend: setup.backend }).then(
	(encoder) => {
		port.on('message', async ({ id, texts }: WorkerRequest) => {
			try {
				const vectors = await encoder.embed(texts);
				// One buffer, moved rather than copied.
				const flat = new Float32Array(vectors.length * encoder.dimension);
				vectors.forEach((v, i) => flat.set(v, i * encoder.dimension));
				port.postMessage({ id, vectors: flat } satisfies WorkerReply, [flat.buffer]);
			} catch (error) {
				port.postMessage({ id, error: describe(error) } satisfies WorkerReply);
			}
		});
		port.postMessage({ ready: { backendName: encoder.backendName } } satisfies WorkerReply);
	},
	(error) => port.postMessage({ failed: describe(error) } satisfies WorkerReply),
);
