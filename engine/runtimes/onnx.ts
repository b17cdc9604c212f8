import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import type * as Ort from 'onnxruntime-node';
import { NORMALIZATIONS, backboneKey, type ImageBackboneSpec, type Normalization } from '../backbones/catalog';
import type { Activation, CompiledPlan } from './compiler';
import { CompileError } from './compiler';
import { writeAtomically, type ModelArtifacts } from '../net/download';
import { errorMessage } from '../errors';
import { encodeModel, onnxRuntime } from './onnx-runtime';
import { activationParams, correctBias, floatLayers, quantizeBias, quantizeWeights, quantizedTensors, StatsTracker, type ActivationStats, type Calibration } from './quantize';
import { settings } from '../settings';

/**
 * Writes a compiled plan as an ONNX model (opset 13). The input `pixels` is the decoded RGB bytes,
 * uint8 NHWC; the graph converts, transposes and normalises them itself (ONNX Runtime's threads are
 * faster at it than a JS loop). The output is `features` [batch, featureSize].
 */
export interface GraphOptions {
	/** Present: the int8 graph, with these activation ranges and channel means (every tensor quantizedTensors names). */
	int8?: ActivationStats;
	/** Float tensors of the plan to add as graph outputs, by plan name (to calibrate on). */
	expose?: string[];
}

export function planToOnnx(plan: CompiledPlan, normalization: Normalization, options: GraphOptions = {}): Uint8Array {
	const ranges = options.int8?.ranges;
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
	const initializer = (name: string, dims: number[], values: Float32Array | Int8Array | Uint8Array | Int32Array) => {
		const dataType =
			values instanceof Float32Array ? onnx.TensorProto.DataType.FLOAT
			: values instanceof Int8Array ? onnx.TensorProto.DataType.INT8
			: values instanceof Uint8Array ? onnx.TensorProto.DataType.UINT8
			: onnx.TensorProto.DataType.INT32;
		initializers.push({ name, dims, dataType, rawData: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)) });
		return name;
	};
	/** The scale each quantized tensor was given, for the int32 bias of the convolution reading it. */
	const scales = new Map<string, number>();
	/**
	 * QuantizeLinear then DequantizeLinear on `tensor` (a float graph name): ONNX Runtime fuses each
	 * such pair around a convolution or sum into one integer kernel. Returns the name to read.
	 */
	const quantize = (planName: string, tensor: string): string => {
		const range = ranges!.get(planName);
		if (!range) throw new CompileError(`tensor ${planName} has no calibrated range`);
		const { scale, zeroPoint } = activationParams(range);
		scales.set(planName, scale);
		const s = initializer(fresh(`${planName}_scale`), [], Float32Array.of(scale));
		const z = initializer(fresh(`${planName}_zero`), [], Uint8Array.of(zeroPoint));
		const q = fresh(`${planName}_q`);
		const dq = fresh(`${planName}_dq`);
		nodes.push({ opType: 'QuantizeLinear', input: [tensor, s, z], output: [q] }, { opType: 'DequantizeLinear', input: [q, s, z], output: [dq] });
		return dq;
	};
	/** A per-channel (axis 0) integer initializer read back as float. */
	const dequantized = (base: string, dims: number[], values: Int8Array | Int32Array, channelScales: Float32Array): string => {
		const q = initializer(fresh(`${base}_q`), dims, values);
		const s = initializer(fresh(`${base}_scale`), [channelScales.length], channelScales);
		const z = initializer(fresh(`${base}_zero`), [channelScales.length], values instanceof Int8Array ? new Int8Array(channelScales.length) : new Int32Array(channelScales.length));
		const out = fresh(base);
		nodes.push({ opType: 'DequantizeLinear', input: [q, s, z], output: [out], attribute: [int('axis', 0)] });
		return out;
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
	// The layers the int8 graph keeps in float; an output of theirs is quantized only where an int8 layer reads it.
	const float = ranges ? floatLayers(plan) : new Set<string>();
	const int8Inputs = new Set(
		plan.ops.flatMap((op) => {
			if (float.has(op.output) || !(op.kind === 'conv' || op.kind === 'add' || op.kind === 'activation')) return [];
			return op.kind === 'add' ? op.inputs : [op.input];
		}),
	);
	const exposed: string[] = [];
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
				const dims = [outChannels, inPerGroup, kh, kw];
				let w: string;
				let b: string;
				if (ranges && !float.has(op.output)) {
					const quantized = quantizeWeights(weights, outChannels);
					const mean = options.int8!.means.get(op.input);
					const bias = quantizeBias(mean ? correctBias(op.bias, weights, quantized, mean, inPerGroup) : op.bias, scales.get(op.input)!, quantized.scales);
					w = dequantized(`${op.output}_w`, dims, quantized.values, quantized.scales);
					b = dequantized(`${op.output}_b`, [outChannels], bias.values, bias.scales);
				} else {
					w = initializer(fresh(`${op.output}_w`), dims, weights);
					b = initializer(fresh(`${op.output}_b`), [outChannels], op.bias);
				}
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
				// Add, not Sum, for two: ONNX Runtime has an integer kernel for Add only.
				nodes.push({ opType: op.inputs.length === 2 ? 'Add' : 'Sum', input: op.inputs.map(nameOf), output: [sumOut] });
				if (op.activation !== 'linear') activate(sumOut, op.activation, output);
				break;
			}
			case 'globalAveragePool': {
				const pooled = fresh(`${op.output}_pooled`);
				if (op.power) {
					const raised = fresh(`${op.output}_raised`);
					const mean = fresh(`${op.output}_mean`);
					nodes.push({ opType: 'Pow', input: [nameOf(op.input), initializer(fresh('power'), [], Float32Array.of(op.power))], output: [raised] });
					nodes.push({ opType: 'GlobalAveragePool', input: [raised], output: [mean] });
					nodes.push({ opType: 'Pow', input: [mean, initializer(fresh('root'), [], Float32Array.of(1 / op.power))], output: [pooled] });
				} else {
					nodes.push({ opType: 'GlobalAveragePool', input: [nameOf(op.input)], output: [pooled] });
				}
				nodes.push({ opType: 'Flatten', input: [pooled], output: [output], attribute: [int('axis', 1)] });
				break;
			}
			case 'flatten':
				// Only reached for [C] or [1,1,C] data: NCHW flattening gives the same order.
				nodes.push({ opType: 'Flatten', input: [nameOf(op.input)], output: [output], attribute: [int('axis', 1)] });
				break;
		}
		const quantized = ranges && op.kind !== 'globalAveragePool' && op.kind !== 'flatten' && op.kind !== 'dense' && (!float.has(op.output) || int8Inputs.has(op.output));
		names.set(op.output, quantized ? quantize(op.output, output) : output);
		if (options.expose?.includes(op.output)) exposed.push(output);
	}
	nodes.push({ opType: 'Identity', input: [nameOf(plan.output)], output: ['features'] });
	const [h, w, c] = plan.inputShape;
	const tensorType = (dims: (number | string)[], elemType: number = onnx.TensorProto.DataType.FLOAT): onnx.ITypeProto => ({
		tensorType: {
			elemType,
			shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
		},
	});
	return encodeModel({
		name: 'backbone',
		node: nodes,
		initializer: initializers,
		input: [{ name: 'pixels', type: tensorType(['batch', h, w, c], onnx.TensorProto.DataType.UINT8) }],
		output: [{ name: 'features', type: tensorType(['batch', plan.featureSize]) }, ...exposed.map((name) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT } } }))],
	});
}

/** Bump when planToOnnx changes what it writes, so cached files are rebuilt. */
const COMPILER_VERSION = 7;

/** An int8 graph's activation statistics and where they came from. */
export interface Int8Calibration extends ActivationStats {
	calibration: Calibration;
}

function sessionOptions(): Ort.InferenceSession.SessionOptions {
	return {
		executionProviders: ['cpu'],
		intraOpNumThreads: settings().onnxThreads,
		graphOptimizationLevel: 'all',
		// Spinning worker threads would take the cores that sharp needs to decode the next batch.
		extra: { session: { intra_op: { allow_spinning: '0' } } },
	};
}

/** The compiled graph's cache file, without extension: backbone, weights, compiler version. */
export function compiledBase(spec: ImageBackboneSpec, artifacts: ModelArtifacts): string {
	const hash = crypto.createHash('sha256').update(`${COMPILER_VERSION}:${backboneKey(spec)}`).update(new Uint8Array(artifacts.weightData)).digest('hex').slice(0, 16);
	return path.join(settings().modelCacheDir, 'compiled', `${spec.id.replace(/[^A-Za-z0-9._-]/g, '_').slice(-80)}-${hash}`);
}

/**
 * Runs a compiled plan on ONNX Runtime's CPU engine, in float32 or, given activation ranges, int8.
 * The ONNX file is cached in the model cache (`compiled/`), keyed by the backbone, a hash of its
 * weights and, for int8, of the activation statistics.
 */
export class OnnxExecutor {
	readonly input = 'pixels';

	private constructor(
		private readonly session: Ort.InferenceSession,
		private readonly plan: CompiledPlan,
	) {}

	static async create(plan: CompiledPlan, spec: ImageBackboneSpec, artifacts: ModelArtifacts, int8?: Int8Calibration): Promise<OnnxExecutor> {
		const ort = onnxRuntime();
		const statsHash = int8 && crypto.createHash('sha256').update(JSON.stringify([[...int8.ranges], [...int8.means]])).digest('hex').slice(0, 12);
		const file = `${compiledBase(spec, artifacts)}${int8 ? `-int8-${int8.calibration}-${statsHash}` : ''}.onnx`;
		let bytes: Uint8Array | undefined = await fs.readFile(file).catch(() => undefined);
		if (!bytes) {
			bytes = planToOnnx(plan, NORMALIZATIONS[spec.normalization], { int8 });
			// A read-only cache only costs the compile next time (a few tens of milliseconds).
			await writeAtomically(file, Buffer.from(bytes)).catch(() => {});
		}
		return new OnnxExecutor(await ort.InferenceSession.create(bytes, sessionOptions()), plan);
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

/**
 * The float32 features of a batch of decoded images (RGB bytes, the plan's input size, back to
 * back) and the [min, max] and channel means each tensor the int8 graph quantizes took on it.
 */
export async function calibrate(plan: CompiledPlan, normalization: Normalization, pixels: Uint8Array, count: number): Promise<{ features: Float32Array } & ActivationStats> {
	const ort = onnxRuntime();
	const tensors = quantizedTensors(plan);
	const session = await ort.InferenceSession.create(planToOnnx(plan, normalization, { expose: tensors }), sessionOptions());
	try {
		const [h, w, c] = plan.inputShape;
		const result = await session.run({ pixels: new ort.Tensor('uint8', pixels, [count, h, w, c]) });
		const tracker = new StatsTracker();
		session.outputNames.slice(1).forEach((name, i) => tracker.add(tensors[i], result[name].data as Float32Array, result[name].dims));
		return { features: result.features.data as Float32Array, ranges: tracker.ranges, means: tracker.means };
	} finally {
		await session.release();
	}
}
