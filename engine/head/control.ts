/**
 * What trainHead and its worker thread share over a SharedArrayBuffer. onnxruntime-node's session
 * calls are synchronous native code: a thread ended while inside one aborts the whole process (the
 * call returns into an ended thread and throws a C++ exception that nothing catches). So the worker
 * reaches ONNX Runtime only through a gate that the main thread closes, after any call in progress,
 * before the process exits; and a training asked to stop ends at its next call or progress report,
 * then tells trainHead, which ends the worker only then.
 */
import type { SoftmaxProducts } from './products';

const STOP = 0;
const GATE = 1;
const OPEN = 0;
const INSIDE = 1;
const CLOSED = 2;

export type TrainingControl = Int32Array;

export function trainingControl(): TrainingControl {
	return new Int32Array(new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT));
}

export function askToStop(control: TrainingControl): void {
	Atomics.store(control, STOP, 1);
}

class TrainingStopped extends Error {
	constructor() {
		super('The training was stopped');
	}
}

/** Worker side: throws TrainingStopped once the training was asked to stop. */
export function checkStop(control: TrainingControl): void {
	if (Atomics.load(control, STOP)) throw new TrainingStopped();
}

/** Worker side: `call` into ONNX Runtime, unless the training was asked to stop (`evenIfStopped`: a release) or the gate is closed. */
async function throughGate<T>(control: TrainingControl, call: () => Promise<T>, evenIfStopped = false): Promise<T> {
	if (!evenIfStopped) checkStop(control);
	if (Atomics.compareExchange(control, GATE, OPEN, INSIDE) !== OPEN) throw new TrainingStopped();
	try {
		return await call();
	} finally {
		Atomics.store(control, GATE, OPEN);
		Atomics.notify(control, GATE);
	}
}

/** Worker side: products opened, used and released through the gate. */
export async function gatedProducts(control: TrainingControl, open: () => Promise<SoftmaxProducts>): Promise<SoftmaxProducts> {
	const products = await throughGate(control, open);
	return {
		runtime: products.runtime,
		loss: (...args) => throughGate(control, () => products.loss(...args)),
		logits: (...args) => throughGate(control, () => products.logits(...args)),
		release: () => throughGate(control, () => products.release(), true),
	};
}

/**
 * Main side, synchronous (for process exit): closes the gate once no call is inside, waiting at
 * most `timeoutMs` for one in progress.
 */
export function closeGate(control: TrainingControl, timeoutMs: number): void {
	const deadline = Date.now() + timeoutMs;
	while (Atomics.compareExchange(control, GATE, OPEN, CLOSED) === INSIDE) {
		const left = deadline - Date.now();
		if (left <= 0) return;
		Atomics.wait(control, GATE, INSIDE, left);
	}
}
