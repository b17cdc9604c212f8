/**
 * The two matrix products of each loss evaluation, the logits X·Wᵀ + b and the kernel's gradient
 * Dᵀ·X, on ONNX Runtime where it loads: its SIMD kernels do them several times faster than the best
 * JS loop. The softmax, the loss and everything L-BFGS keeps stay in float64 JS. Where ONNX Runtime
 * does not load (onnxruntime-node ships no musl binary) or TL_BACKEND names another backend, the
 * plain-JS kernels do it all.
 */
import type * as Ort from 'onnxruntime-node';
import { settings } from '../settings';
import { penalty, rowLoss, softmaxLogits, softmaxLoss, type SoftmaxParameters, type SoftmaxProblem } from './solver';

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

/** ONNX Runtime where TL_BACKEND allows it and it loads, else the JS kernels. */
export async function openProducts(load: () => Runtime = () => require('onnxruntime-node') as Runtime): Promise<SoftmaxProducts> {
	if (!['auto', 'onnxruntime'].includes(settings().backend)) return JS_PRODUCTS;
	let ort: Runtime;
	try {
		ort = load();
	} catch {
		return JS_PRODUCTS;
	}
	return OnnxProducts.open(ort);
}

class OnnxProducts implements SoftmaxProducts {
	readonly runtime = 'onnxruntime';

	private constructor(
		private readonly ort: Runtime,
		/** x [rows, inputs], w [classes, inputs], b [classes] -> logits [rows, classes] */
		private readonly forward: Ort.InferenceSession,
		/** dt [classes, rows], x [rows, inputs] -> kernel gradient [classes, inputs] */
		private readonly backward: Ort.InferenceSession,
	) {}

	static async open(ort: Runtime): Promise<OnnxProducts> {
		const options: Ort.InferenceSession.SessionOptions = {
			executionProviders: ['cpu'],
			// One thread, the worker's own (at low priority): the other core serves n8n's webhooks.
			intraOpNumThreads: 1,
			interOpNumThreads: 1,
		};
		// Loaded here, not at the top: the JS path does without it.
		const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
		const transB = { name: 'transB', i: 1, type: onnx.AttributeProto.AttributeType.INT };
		const forward = await ort.InferenceSession.create(
			graph(onnx, { opType: 'Gemm', input: ['x', 'w', 'b'], output: ['logits'], attribute: [transB] }, { x: ['rows', 'inputs'], w: ['classes', 'inputs'], b: ['classes'] }),
			options,
		);
		const backward = await ort.InferenceSession.create(graph(onnx, { opType: 'MatMul', input: ['dt', 'x'], output: ['gradient'] }, { dt: ['classes', 'rows'], x: ['rows', 'inputs'] }), options).catch(
			async (error: unknown) => {
				await forward.release();
				throw error;
			},
		);
		return new OnnxProducts(ort, forward, backward);
	}

	async logits(problem: SoftmaxProblem, w: SoftmaxParameters): Promise<Float64Array> {
		const { x, inputs: d, classes: k, target } = problem;
		const { Tensor } = this.ort;
		const result = await this.forward.run({
			x: new Tensor('float32', x, [target.length, d]),
			w: new Tensor('float32', Float32Array.from(w.subarray(0, k * d)), [k, d]),
			b: new Tensor('float32', Float32Array.from(w.subarray(k * d)), [k]),
		});
		return Float64Array.from(result.logits.data as Float32Array);
	}

	async loss(problem: SoftmaxProblem, l2: number, w: SoftmaxParameters, gradient: Float64Array): Promise<number> {
		const { x, inputs: d, classes: k, target, weight } = problem;
		const n = target.length;
		const biasAt = k * d;
		const z = await this.logits(problem, w);
		const dt = new Float32Array(k * n);
		gradient.fill(0, biasAt);
		let loss = 0;
		for (let r = 0; r < n; r++) {
			const at = r * k;
			loss += rowLoss(z, at, k, target[r], weight[r]);
			for (let c = 0; c < k; c++) {
				gradient[biasAt + c] += z[at + c];
				dt[c * n + r] = z[at + c];
			}
		}
		const { Tensor } = this.ort;
		const result = await this.backward.run({ dt: new Tensor('float32', dt, [k, n]), x: new Tensor('float32', x, [n, d]) });
		gradient.set(result.gradient.data as Float32Array);
		return loss + penalty(l2, w, gradient, biasAt);
	}

	async release(): Promise<void> {
		await Promise.all([this.forward.release(), this.backward.release()]);
	}
}

/** A one-node float32 ONNX model: its inputs with their (symbolic) dimensions, its outputs. */
function graph(onnx: typeof import('onnx-proto').onnx, node: import('onnx-proto').onnx.INodeProto, inputs: Record<string, string[]>): Uint8Array {
	const float = onnx.TensorProto.DataType.FLOAT;
	const model = onnx.ModelProto.create({
		irVersion: 8,
		producerName: 'n8n-nodes-transfer-learning',
		opsetImport: [{ domain: '', version: 13 }],
		graph: {
			name: node.opType!,
			node: [node],
			input: Object.entries(inputs).map(([name, dims]) => ({ name, type: { tensorType: { elemType: float, shape: { dim: dims.map((dimParam) => ({ dimParam })) } } } })),
			output: node.output!.map((name) => ({ name, type: { tensorType: { elemType: float } } })),
		},
	});
	return onnx.ModelProto.encode(model).finish();
}
