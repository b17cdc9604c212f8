import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import type * as Ort from 'onnxruntime-node';
import { NORMALIZATIONS, backboneKey, type ImageBackboneSpec, type Normalization } from './catalog';
import type { Activation, CompiledPlan } from './compiler';
import { CompileError } from './compiler';
import { writeAtomically, type ModelArtifacts } from './download';
import { errorMessage } from './errors';
import { settings } from './settings';

/**
 * Writes a compiled plan as an ONNX model (opset 13). The input `pixels` is the decoded RGB bytes,
 * uint8 NHWC; the graph converts, transposes and normalises them itself (ONNX Runtime's threads are
 * faster at it than a JS loop). The output is `features` [batch, featureSize].
 */
function planToOnnx(plan: CompiledPlan, normalization: Normalization): Uint8Array {
	const nodes: onnx.INodeProto[] = [];
	const initializers: onnx.ITensorProto[] = [];
	let counter = 0;
	const fresh = (base: string) => `${base}__${counter++}`;
	const names = new Map<string, string>([[plan.input, 'images']]);
	const scaleName = `scale__${counter++}`;
	const offsetName = `offset__${counter++}`;
	const nameOf = (tensor: string) => {
		const name = names.get(tensor);
		if (!name) throw new CompileError(`tensor ${tensor} is used before it is computed`);
		return name;
	};
	const initializer = (name: string, dims: number[], values: Float32Array) => {
		initializers.push({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)) });
		return name;
	};
	const int = (name: string, i: number): onnx.IAttributeProto => ({ name, i, type: onnx.AttributeProto.AttributeType.INT });
	const ints = (name: string, values: number[]): onnx.IAttributeProto => ({ name, ints: values, type: onnx.AttributeProto.AttributeType.INTS });
	const activate = (input: string, activation: Activation, output: string) => {
		switch (activation) {
			case 'linear':
				nodes.push({ opType: 'Identity', input: [input], output: [output] });
				break;
			case 'relu':
				nodes.push({ opType: 'Relu', input: [input], output: [output] });
				break;
			case 'relu6': {
				const zero = initializer(fresh('zero'), [], Float32Array.of(0));
				const six = initializer(fresh('six'), [], Float32Array.of(6));
				nodes.push({ opType: 'Clip', input: [input, zero, six], output: [output] });
				break;
			}
			case 'sigmoid':
				nodes.push({ opType: 'Sigmoid', input: [input], output: [output] });
				break;
			case 'tanh':
				nodes.push({ opType: 'Tanh', input: [input], output: [output] });
				break;
			case 'softmax':
				// Over the channels, as TF.js does: axis 1 both of NCHW maps and of [batch, units] vectors.
				nodes.push({ opType: 'Softmax', input: [input], output: [output], attribute: [int('axis', 1)] });
				break;
		}
	};

	initializer(scaleName, [], Float32Array.of(normalization.scale));
	initializer(offsetName, [], Float32Array.of(normalization.offset));
	nodes.push(
		{ opType: 'Cast', input: ['pixels'], output: ['pixels_float'], attribute: [int('to', onnx.TensorProto.DataType.FLOAT)] },
		{ opType: 'Transpose', input: ['pixels_float'], output: ['pixels_nchw'], attribute: [ints('perm', [0, 3, 1, 2])] },
		{ opType: 'Mul', input: ['pixels_nchw', scaleName], output: ['pixels_scaled'] },
		{ opType: 'Add', input: ['pixels_scaled', offsetName], output: ['images'] },
	);
	for (const op of plan.ops) {
		const output = fresh(op.output);
		switch (op.kind) {
			case 'conv': {
				const [kh, kw, cin, cout] = op.kernelShape;
				const outChannels = op.depthwise ? cin : cout;
				// HWIO (or HWC1) to ONNX's OIHW (or C1HW for groups = channels).
				const weights = new Float32Array(op.kernel.length);
				const inPerGroup = op.depthwise ? 1 : cin;
				for (let y = 0; y < kh; y++)
					for (let x = 0; x < kw; x++)
						for (let i = 0; i < inPerGroup; i++)
							for (let o = 0; o < outChannels; o++) {
								const source = op.depthwise ? (y * kw + x) * cin + o : ((y * kw + x) * cin + i) * cout + o;
								weights[((o * inPerGroup + i) * kh + y) * kw + x] = op.kernel[source];
							}
				const w = initializer(fresh(`${op.output}_w`), [outChannels, inPerGroup, kh, kw], weights);
				const b = initializer(fresh(`${op.output}_b`), [outChannels], op.bias);
				const [top, bottom, left, right] = op.pads;
				const convOut = op.activation === 'linear' ? output : fresh(`${op.output}_conv`);
				nodes.push({
					opType: 'Conv',
					input: [nameOf(op.input), w, b],
					output: [convOut],
					attribute: [ints('kernel_shape', [kh, kw]), ints('strides', op.strides), ints('pads', [top, left, bottom, right]), int('group', op.depthwise ? cin : 1)],
				});
				if (op.activation !== 'linear') activate(convOut, op.activation, output);
				break;
			}
			case 'dense': {
				const w = initializer(fresh(`${op.output}_w`), op.kernelShape, op.kernel);
				const b = initializer(fresh(`${op.output}_b`), [op.kernelShape[1]], op.bias);
				const gemmOut = op.activation === 'linear' ? output : fresh(`${op.output}_gemm`);
				nodes.push({ opType: 'Gemm', input: [nameOf(op.input), w, b], output: [gemmOut] });
				if (op.activation !== 'linear') activate(gemmOut, op.activation, output);
				break;
			}
			case 'activation':
				activate(nameOf(op.input), op.activation, output);
				break;
			case 'add': {
				const sumOut = op.activation === 'linear' ? output : fresh(`${op.output}_sum`);
				nodes.push({ opType: 'Sum', input: op.inputs.map(nameOf), output: [sumOut] });
				if (op.activation !== 'linear') activate(sumOut, op.activation, output);
				break;
			}
			case 'globalAveragePool': {
				const pooled = fresh(`${op.output}_pooled`);
				nodes.push({ opType: 'GlobalAveragePool', input: [nameOf(op.input)], output: [pooled] });
				nodes.push({ opType: 'Flatten', input: [pooled], output: [output], attribute: [int('axis', 1)] });
				break;
			}
			case 'flatten':
				// Only reached for [C] or [1,1,C] data: NCHW flattening gives the same order.
				nodes.push({ opType: 'Flatten', input: [nameOf(op.input)], output: [output], attribute: [int('axis', 1)] });
				break;
		}
		names.set(op.output, output);
	}
	nodes.push({ opType: 'Identity', input: [nameOf(plan.output)], output: ['features'] });
	const [h, w, c] = plan.inputShape;
	const tensorType = (dims: (number | string)[], elemType: number = onnx.TensorProto.DataType.FLOAT): onnx.ITypeProto => ({
		tensorType: {
			elemType,
			shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
		},
	});
	const model = onnx.ModelProto.create({
		irVersion: 8,
		producerName: 'n8n-nodes-transfer-learning',
		opsetImport: [{ domain: '', version: 13 }],
		graph: {
			name: 'backbone',
			node: nodes,
			initializer: initializers,
			input: [{ name: 'pixels', type: tensorType(['batch', h, w, c], onnx.TensorProto.DataType.UINT8) }],
			output: [{ name: 'features', type: tensorType(['batch', plan.featureSize]) }],
		},
	});
	return onnx.ModelProto.encode(model).finish();
}

let runtime: typeof Ort | undefined;

/** onnxruntime-node ships glibc binaries; on musl (Alpine) or an odd platform it will not load. */
function onnxRuntime(): typeof Ort {
	runtime ??= require('onnxruntime-node') as typeof Ort;
	return runtime;
}

/** Bump when planToOnnx changes what it writes, so cached files are rebuilt. */
const COMPILER_VERSION = 3;

/**
 * Runs a compiled plan on ONNX Runtime's CPU engine. The ONNX file is cached in the model cache
 * (`compiled/`), keyed by the backbone and a hash of its weights.
 */
export class OnnxExecutor {
	readonly input = 'pixels';

	private constructor(
		private readonly session: Ort.InferenceSession,
		private readonly plan: CompiledPlan,
	) {}

	static async create(plan: CompiledPlan, spec: ImageBackboneSpec, artifacts: ModelArtifacts): Promise<OnnxExecutor> {
		const ort = onnxRuntime();
		const hash = crypto.createHash('sha256').update(`${COMPILER_VERSION}:${backboneKey(spec)}`).update(new Uint8Array(artifacts.weightData)).digest('hex').slice(0, 16);
		const file = path.join(settings().modelCacheDir, 'compiled', `${spec.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(-80)}-${hash}.onnx`);
		let bytes: Uint8Array | undefined = await fs.readFile(file).catch(() => undefined);
		if (!bytes) {
			bytes = planToOnnx(plan, NORMALIZATIONS[spec.normalization]);
			// A read-only cache only costs the compile next time (a few tens of milliseconds).
			await writeAtomically(file, Buffer.from(bytes)).catch(() => {});
		}
		const session = await ort.InferenceSession.create(bytes, {
			executionProviders: ['cpu'],
			intraOpNumThreads: settings().onnxThreads,
			graphOptimizationLevel: 'all',
			// Spinning worker threads would take the cores that sharp needs to decode the next batch.
			extra: { session: { intra_op: { allow_spinning: '0' } } },
		});
		return new OnnxExecutor(session, plan);
	}

	async run(input: Uint8Array, batch: number): Promise<Float32Array> {
		const ort = onnxRuntime();
		const [h, w, c] = this.plan.inputShape;
		const result = await this.session.run({ pixels: new ort.Tensor('uint8', input, [batch, h, w, c]) });
		return result.features.data as Float32Array;
	}

	dispose(): void {
		this.session.release().catch((error: unknown) => console.warn(`[transfer-learning] could not release an ONNX Runtime session: ${errorMessage(error)}`));
	}
}
