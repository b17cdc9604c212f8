/**
 * The two matrix products of each loss evaluation, the logits X·W + b and the kernel's gradient
 * Xᵀ·D, on ONNX Runtime where it loads: its SIMD kernels do them several times faster than the best
 * JS loop. The softmax and the loss stay in JS, and everything is float64, so that L-BFGS's line
 * search sees the objective the JS kernels compute. Where ONNX Runtime does not load
 * (onnxruntime-node ships no musl binary) or TL_BACKEND names another backend, the plain-JS kernels
 * do it all.
 */
import type * as Ort from 'onnxruntime-node';
import { errorMessage } from '../errors';
import { encodeModel, onnxRuntime } from '../runtimes/onnx-runtime';
import { settings } from '../settings';
import { rowLoss, softmaxLogits, softmaxLoss, type SoftmaxParameters, type SoftmaxProblem } from './solver';

export interface SoftmaxProducts {
	readonly runtime: 'onnxruntime' | 'js';
	/** softmaxLoss: the loss of `w`, its gradient into `gradient`. */
	loss(problem: SoftmaxProblem, l2: number, w: SoftmaxParameters, gradient: Float64Array): Promise<number>;
	/** Every row's logits, [rows, classes]. */
	logits(problem: SoftmaxProblem, w: SoftmaxParameters): Promise<Float64Array>;
	release(): Promise<void>;
}

export const JS_PRODUCTS: SoftmaxProducts = {
	runtime: 'js',
	loss: async (problem, l2, w, gradient) => softmaxLoss(problem, l2, w, gradient),
	logits: async (problem, w) => softmaxLogits(problem, w),
	release: async () => {},
};

type Runtime = typeof Ort;

/** ONNX Runtime where TL_BACKEND allows it and it loads, else the JS kernels (the training report says which ran). */
export async function openProducts(): Promise<SoftmaxProducts> {
	if (!['auto', 'onnxruntime'].includes(settings().backend)) return JS_PRODUCTS;
	try {
		return await OnnxProducts.open(onnxRuntime());
	} catch {
		return JS_PRODUCTS;
	}
}

class OnnxProducts implements SoftmaxProducts {
	readonly runtime = 'onnxruntime';
	/** Each problem's rows as ONNX Runtime reads them, made once: [rows, inputs], and transposed for the gradient. */
	private readonly rows = new WeakMap<SoftmaxProblem, Ort.Tensor>();
	private readonly columns = new WeakMap<SoftmaxProblem, Ort.Tensor>();

	private constructor(
		private readonly ort: Runtime,
		/** x [rows, inputs], w [inputs, classes], b [classes] -> logits [rows, classes] */
		private readonly forward: Ort.InferenceSession,
		/** xt [inputs, rows], dz [rows, classes], w, l2 -> the kernel's gradient with its penalty's, and the kernel's squared sum */
		private readonly backward: Ort.InferenceSession,
	) {}

	/**
	 * Float64 throughout: with float32 products L-BFGS stopped a few iterations elsewhere and one
	 * flowers5 test image in 600 (5 seeds) changed class; in float64 the heads are the JS kernels'.
	 * Each product has the small matrix on its right, where MLAS's double kernels are fast (Dᵀ·X, with
	 * X on the right, took three times as long): hence X is also kept transposed. The penalty is in
	 * the graph too: a loop over the kernel per evaluation, in a worker whose JIT is cold, cost more
	 * than the products.
	 */
	static async open(ort: Runtime): Promise<OnnxProducts> {
		const options: Ort.InferenceSession.SessionOptions = {
			executionProviders: ['cpu'],
			// One thread, the worker's own (at low priority): the other core serves n8n's webhooks.
			intraOpNumThreads: 1,
			interOpNumThreads: 1,
		};
		// Loaded here, not at the top: the JS path does without it.
		const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
		const forward = await ort.InferenceSession.create(
			graph(onnx, [{ opType: 'Gemm', input: ['x', 'w', 'b'], output: ['logits'] }], { x: ['rows', 'inputs'], w: ['inputs', 'classes'], b: ['classes'] }, ['logits']),
			options,
		);
		const backward = await ort.InferenceSession.create(
			graph(
				onnx,
				[
					{ opType: 'MatMul', input: ['xt', 'dz'], output: ['products'] },
					{ opType: 'Mul', input: ['w', 'l2'], output: ['decay'] },
					{ opType: 'Add', input: ['products', 'decay'], output: ['gradient'] },
					{ opType: 'ReduceSumSquare', input: ['w'], output: ['squares'], attribute: [{ name: 'keepdims', i: 0, type: onnx.AttributeProto.AttributeType.INT }] },
				],
				{ xt: ['inputs', 'rows'], dz: ['rows', 'classes'], w: ['inputs', 'classes'], l2: [] },
				['gradient', 'squares'],
			),
			options,
		).catch(async (error: unknown) => {
			await forward.release();
			throw error;
		});
		return new OnnxProducts(ort, forward, backward);
	}

	private rowsOf(problem: SoftmaxProblem): Ort.Tensor {
		let x = this.rows.get(problem);
		if (!x) this.rows.set(problem, (x = new this.ort.Tensor('float64', problem.x, [problem.target.length, problem.inputs])));
		return x;
	}

	/** Only problems whose gradient is asked for: the validation split is only scored. */
	private columnsOf(problem: SoftmaxProblem): Ort.Tensor {
		let xt = this.columns.get(problem);
		if (!xt) {
			const { x, inputs: d } = problem;
			const n = problem.target.length;
			const values = new Float64Array(n * d);
			for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) values[j * n + r] = x[r * d + j];
			this.columns.set(problem, (xt = new this.ort.Tensor('float64', values, [d, n])));
		}
		return xt;
	}

	async logits(problem: SoftmaxProblem, w: SoftmaxParameters): Promise<Float64Array> {
		const { inputs: d, classes: k } = problem;
		const { Tensor } = this.ort;
		const result = await this.forward.run({ x: this.rowsOf(problem), w: new Tensor('float64', w.subarray(0, d * k), [d, k]), b: new Tensor('float64', w.subarray(d * k), [k]) });
		return result.logits.data as Float64Array;
	}

	async loss(problem: SoftmaxProblem, l2: number, w: SoftmaxParameters, gradient: Float64Array): Promise<number> {
		const { inputs: d, classes: k } = problem;
		const n = problem.target.length;
		const biasAt = k * d;
		const z = await this.logits(problem, w);
		const loss = rowsLoss(problem, z, gradient);
		const { Tensor } = this.ort;
		const result = await this.backward.run({
			xt: this.columnsOf(problem),
			dz: new Tensor('float64', z, [n, k]),
			w: new Tensor('float64', w.subarray(0, biasAt), [d, k]),
			l2: new Tensor('float64', Float64Array.of(l2), []),
		});
		gradient.set(result.gradient.data as Float64Array);
		return loss + (l2 / 2) * (result.squares.data as Float64Array)[0];
	}

	/** A session that fails to release costs memory, not the training: it is reported, not thrown. */
	async release(): Promise<void> {
		for (const result of await Promise.allSettled([this.forward.release(), this.backward.release()])) {
			if (result.status === 'rejected') console.warn(`[transfer-learning] could not release an ONNX Runtime session: ${errorMessage(result.reason)}`);
		}
	}
}

/**
 * The rows' loss from their logits `z`, which become the loss's derivative by them; the biases'
 * gradient into `gradient`. Not inline in the async caller: V8 would leave the loop unoptimised.
 */
function rowsLoss({ classes: k, inputs: d, target, weight }: SoftmaxProblem, z: Float64Array, gradient: Float64Array): number {
	const biasAt = k * d;
	gradient.fill(0, biasAt);
	let loss = 0;
	for (let r = 0; r < target.length; r++) {
		const at = r * k;
		loss += rowLoss(z, at, k, target[r], weight[r]);
		for (let c = 0; c < k; c++) gradient[biasAt + c] += z[at + c];
	}
	return loss;
}

/** A float64 ONNX model of `nodes`: its inputs with their (symbolic) dimensions, and its outputs. */
function graph(onnx: typeof import('onnx-proto').onnx, nodes: import('onnx-proto').onnx.INodeProto[], inputs: Record<string, string[]>, outputs: string[]): Uint8Array {
	const double = onnx.TensorProto.DataType.DOUBLE;
	return encodeModel({
		name: 'softmax-products',
		node: nodes,
		input: Object.entries(inputs).map(([name, dims]) => ({ name, type: { tensorType: { elemType: double, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } } })),
		output: outputs.map((name) => ({ name, type: { tensorType: { elemType: double } } })),
	});
}
