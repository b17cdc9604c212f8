/**
 * Compiles a Keras-style TensorFlow.js layers model, cut at its feature layer, into a short list of
 * fused operations: batch normalisation folded into the convolution before it, zero padding folded
 * into the next convolution's padding, activations folded into the op they follow. The same plan is
 * run by TF.js ops (compiled-tfjs.ts) and by ONNX Runtime (onnx.ts).
 */
import { GEM_POWER, type ImageBackboneSpec } from '../backbones/catalog';
import type { ModelArtifacts } from '../net/download';

export type Activation = 'linear' | 'relu' | 'relu6' | 'sigmoid' | 'tanh' | 'softmax';

export type PlanOp =
	| {
			kind: 'conv';
			input: string;
			output: string;
			depthwise: boolean;
			/** HWIO for a convolution, HW(C)(1) for depthwise: [kh, kw, in, out | multiplier]. */
			kernel: Float32Array;
			kernelShape: [number, number, number, number];
			bias: Float32Array;
			strides: [number, number];
			/** [top, bottom, left, right] */
			pads: [number, number, number, number];
			activation: Activation;
			/**
			 * Per output channel, the mean and spread of the values before the activation, as the
			 * batch normalisation folded into this convolution learned them: ranges for int8 without data.
			 */
			stats?: ChannelStats;
	  }
	| { kind: 'dense'; input: string; output: string; kernel: Float32Array; kernelShape: [number, number]; bias: Float32Array; activation: Activation }
	| { kind: 'activation'; input: string; output: string; activation: Activation }
	| { kind: 'add'; inputs: string[]; output: string; activation: Activation }
	/** With `power`, the generalised mean: the average of x^power, to the power 1/power. */
	| { kind: 'globalAveragePool'; input: string; output: string; power?: number }
	| { kind: 'flatten'; input: string; output: string };

export interface ChannelStats {
	mean: Float32Array;
	std: Float32Array;
}

/** Image in (NHWC, normalised), one feature vector per image out. */
export interface CompiledPlan {
	input: string;
	inputShape: [number, number, number];
	output: string;
	featureSize: number;
	ops: PlanOp[];
}

export class CompileError extends Error {}

interface KerasLayer {
	class_name: string;
	config: Record<string, unknown> & { name: string };
	inbound_nodes: unknown[];
	name?: string;
}

type Shape = number[]; // without the batch dimension

interface Tensor {
	/** The layer that produced it, or the fused op's output name. */
	name: string;
	shape: Shape;
}

const ACTIVATIONS: Record<string, Activation> = {
	linear: 'linear',
	relu: 'relu',
	relu6: 'relu6',
	sigmoid: 'sigmoid',
	tanh: 'tanh',
	softmax: 'softmax',
};

function activationOf(name: unknown, layer: string): Activation {
	const activation = ACTIVATIONS[String(name ?? 'linear')];
	if (!activation) throw new CompileError(`layer ${layer}: activation "${String(name)}" is not supported`);
	return activation;
}

/** Reads the weights of a layers model by Keras name (`conv1/kernel`), tolerating a prefix. */
function weightReader(artifacts: ModelArtifacts) {
	const byName = new Map<string, Float32Array>();
	let offset = 0;
	for (const spec of artifacts.weightSpecs) {
		const count = spec.shape.reduce((a, b) => a * b, 1);
		if (spec.dtype !== 'float32' || spec.quantization) {
			throw new CompileError(`weight ${spec.name} is ${spec.quantization?.dtype ?? spec.dtype}, only float32 is compiled`);
		}
		byName.set(spec.name, new Float32Array(artifacts.weightData.slice(offset, offset + count * 4)));
		offset += count * 4;
	}
	return (layer: string, param: string, required = true): Float32Array | undefined => {
		const key = `${layer}/${param}`;
		const found = byName.get(key) ?? [...byName.entries()].find(([name]) => name.endsWith(`/${key}`))?.[1];
		if (!found && required) throw new CompileError(`weight ${key} is missing`);
		return found;
	};
}

function inboundNames(layer: KerasLayer): string[] {
	const nodes = layer.inbound_nodes as unknown[][];
	if (!nodes.length) return [];
	if (nodes.length > 1) throw new CompileError(`layer ${layer.config.name} is used more than once`);
	return (nodes[0] as unknown[]).map((entry) => {
		if (Array.isArray(entry)) return String(entry[0]);
		// Keras 3 style: {args: [{config: {keras_history: [name, ...]}}]}
		throw new CompileError(`layer ${layer.config.name}: unsupported inbound node format`);
	});
}

/** TensorFlow's "same" padding: [before, after] for one spatial axis. */
function samePadding(size: number, kernel: number, stride: number): [number, number] {
	const out = Math.ceil(size / stride);
	const total = Math.max((out - 1) * stride + kernel - size, 0);
	return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

export function compileLayersModel(artifacts: ModelArtifacts, spec: ImageBackboneSpec): CompiledPlan {
	const topology = artifacts.modelJson.modelTopology as { model_config?: unknown; class_name?: string; config?: unknown };
	const model = (topology.model_config ?? topology) as { class_name: string; config: { layers: KerasLayer[]; input_layers?: unknown[][] } };
	if (!['Model', 'Functional'].includes(model.class_name)) throw new CompileError(`${model.class_name} models are not compiled`);
	const layers = model.config.layers;
	const byName = new Map(layers.map((l) => [l.config.name ?? l.name!, l]));
	const weight = weightReader(artifacts);
	const inputLayer = layers.find((l) => l.class_name === 'InputLayer');
	if (!inputLayer) throw new CompileError('the model has no input layer');
	const target = spec.featureLayer ?? (model.config as { output_layers?: unknown[][] }).output_layers?.[0]?.[0];
	if (typeof target !== 'string' || !byName.has(target)) throw new CompileError(`layer ${String(target)} not found`);

	// Only the layers the feature layer depends on, in dependency order.
	const needed: KerasLayer[] = [];
	const seen = new Set<string>();
	const visit = (name: string) => {
		if (seen.has(name)) return;
		seen.add(name);
		const layer = byName.get(name);
		if (!layer) throw new CompileError(`layer ${name} not found`);
		inboundNames(layer).forEach(visit);
		needed.push(layer);
	};
	visit(target);
	const consumers = new Map<string, number>();
	for (const layer of needed) for (const input of inboundNames(layer)) consumers.set(input, (consumers.get(input) ?? 0) + 1);

	const ops: PlanOp[] = [];
	const tensors = new Map<string, Tensor>();
	/** Zero padding waiting to be folded into the next convolution. */
	const pendingPads = new Map<string, { source: Tensor; pads: [number, number, number, number] }>();
	const { height, width } = spec.inputSize;
	const inputName = inputLayer.config.name;
	tensors.set(inputName, { name: inputName, shape: [height, width, 3] });

	const only = (name: string) => consumers.get(name) === 1 && name !== target;
	const lastOpProducing = (name: string) => {
		const op = ops[ops.length - 1];
		return op && 'output' in op && op.output === name && op.kind !== 'globalAveragePool' && op.kind !== 'flatten' ? op : undefined;
	};

	for (const layer of needed) {
		const name = layer.config.name;
		const cfg = layer.config;
		if (layer.class_name === 'InputLayer') continue;
		const inputs = inboundNames(layer);
		const input = tensors.get(inputs[0]);
		const pending = pendingPads.get(inputs[0]);
		if (!input && !pending) throw new CompileError(`layer ${name}: input ${inputs[0]} is not available`);
		switch (layer.class_name) {
			case 'ZeroPadding2D': {
				const p = cfg.padding as number | number[] | number[][];
				const [[top, bottom], [left, right]] =
					typeof p === 'number' ? [[p, p], [p, p]] : typeof p[0] === 'number' ? [[p[0] as number, p[0] as number], [p[1] as number, p[1] as number]] : (p as number[][]);
				const next = needed.filter((l) => inboundNames(l).includes(name));
				if (only(name) && next.length === 1 && ['Conv2D', 'DepthwiseConv2D'].includes(next[0].class_name) && next[0].config.padding === 'valid') {
					pendingPads.set(name, { source: input!, pads: [top, bottom, left, right] });
				} else {
					throw new CompileError(`layer ${name}: zero padding not followed by a "valid" convolution`);
				}
				break;
			}
			case 'Conv2D':
			case 'DepthwiseConv2D': {
				const depthwise = layer.class_name === 'DepthwiseConv2D';
				const source = pending ? pending.source : input!;
				const [h, w, c] = source.shape;
				const kernel = weight(name, depthwise ? 'depthwise_kernel' : 'kernel')!;
				const [kh, kw] = cfg.kernel_size as number[];
				const [sh, sw] = (cfg.strides as number[]) ?? [1, 1];
				const dilation = (cfg.dilation_rate as number[] | undefined) ?? [1, 1];
				if (dilation.some((d) => d !== 1)) throw new CompileError(`layer ${name}: dilated convolutions are not compiled`);
				if (cfg.data_format && cfg.data_format !== 'channels_last') throw new CompileError(`layer ${name}: channels_first`);
				const outChannels = depthwise ? c * ((cfg.depth_multiplier as number) ?? 1) : (cfg.filters as number);
				if (depthwise && outChannels !== c) throw new CompileError(`layer ${name}: depth multiplier other than 1`);
				const kernelShape: [number, number, number, number] = depthwise ? [kh, kw, c, 1] : [kh, kw, c, outChannels];
				if (kernel.length !== kh * kw * c * kernelShape[3]) throw new CompileError(`layer ${name}: kernel has ${kernel.length} values`);
				let pads: [number, number, number, number] = pending ? pending.pads : [0, 0, 0, 0];
				if (cfg.padding === 'same') {
					const [t, b] = samePadding(h, kh, sh);
					const [l, r] = samePadding(w, kw, sw);
					pads = [t, b, l, r];
				}
				const bias = cfg.use_bias === false ? new Float32Array(outChannels) : Float32Array.from(weight(name, 'bias')!);
				const outH = Math.floor((h + pads[0] + pads[1] - kh) / sh) + 1;
				const outW = Math.floor((w + pads[2] + pads[3] - kw) / sw) + 1;
				ops.push({
					kind: 'conv',
					input: source.name,
					output: name,
					depthwise,
					kernel: Float32Array.from(kernel),
					kernelShape,
					bias,
					strides: [sh, sw],
					pads,
					activation: activationOf(cfg.activation, name),
				});
				tensors.set(name, { name, shape: [outH, outW, outChannels] });
				break;
			}
			case 'BatchNormalization': {
				const eps = (cfg.epsilon as number) ?? 1e-3;
				const channels = input!.shape[input!.shape.length - 1];
				const gamma = cfg.scale === false ? new Float32Array(channels).fill(1) : weight(name, 'gamma')!;
				const beta = cfg.center === false ? new Float32Array(channels) : weight(name, 'beta')!;
				const mean = weight(name, 'moving_mean')!;
				const variance = weight(name, 'moving_variance')!;
				const scale = gamma.map((g, i) => g / Math.sqrt(variance[i] + eps));
				const producer = lastOpProducing(input!.name);
				// Folding: conv(x) * s + (beta - mean * s) == conv'(x) with w' = w * s, b' = (b - mean) * s + beta.
				if (producer?.kind === 'conv' && producer.activation === 'linear' && only(input!.name)) {
					// The output channel is the last kernel axis, or for depthwise (multiplier 1) the input channel axis.
					const channels = producer.depthwise ? producer.kernelShape[2] : producer.kernelShape[3];
					for (let i = 0; i < producer.kernel.length; i++) producer.kernel[i] *= scale[i % channels];
					producer.bias = producer.bias.map((b, i) => (b - mean[i]) * scale[i] + beta[i]);
					producer.output = name;
					producer.stats = { mean: Float32Array.from(beta), std: gamma.map(Math.abs) };
					tensors.set(name, { name, shape: input!.shape });
				} else {
					throw new CompileError(`layer ${name}: batch normalisation that does not follow a convolution`);
				}
				break;
			}
			case 'Activation':
			case 'ReLU': {
				let activation: Activation;
				if (layer.class_name === 'ReLU') {
					if ((cfg.negative_slope as number | undefined) || (cfg.threshold as number | undefined)) throw new CompileError(`layer ${name}: leaky or thresholded ReLU`);
					const max = cfg.max_value as number | null | undefined;
					if (max === 6) activation = 'relu6';
					else if (max === null || max === undefined) activation = 'relu';
					else throw new CompileError(`layer ${name}: ReLU capped at ${max}`);
				} else {
					activation = activationOf(cfg.activation, name);
				}
				const producer = lastOpProducing(input!.name);
				if (producer && 'activation' in producer && producer.activation === 'linear' && only(input!.name) && activation !== 'softmax') {
					producer.activation = activation;
					producer.output = name;
				} else {
					ops.push({ kind: 'activation', input: input!.name, output: name, activation });
				}
				tensors.set(name, { name, shape: input!.shape });
				break;
			}
			case 'Add': {
				const sources = inputs.map((i) => tensors.get(i));
				if (sources.some((s) => !s)) throw new CompileError(`layer ${name}: an input is not available`);
				ops.push({ kind: 'add', inputs: sources.map((s) => s!.name), output: name, activation: 'linear' });
				tensors.set(name, { name, shape: input!.shape });
				break;
			}
			case 'GlobalAveragePooling2D': {
				ops.push({ kind: 'globalAveragePool', input: input!.name, output: name });
				tensors.set(name, { name, shape: [input!.shape[2]] });
				break;
			}
			case 'Dropout':
				tensors.set(name, input!);
				break;
			case 'Flatten':
			case 'Reshape': {
				const size = input!.shape.reduce((a, b) => a * b, 1);
				const targetShape = (cfg.target_shape as number[] | undefined) ?? [size];
				// A reshape that only adds or drops unit dimensions keeps the data; anything else is left to TF.js.
				if (targetShape.filter((d) => d !== 1).join() !== input!.shape.filter((d) => d !== 1).join()) {
					throw new CompileError(`layer ${name}: reshape to ${JSON.stringify(targetShape)}`);
				}
				ops.push({ kind: 'flatten', input: input!.name, output: name });
				tensors.set(name, { name, shape: [size] });
				break;
			}
			case 'Dense': {
				if (input!.shape.length !== 1) throw new CompileError(`layer ${name}: dense layer on a ${input!.shape.length}-d input`);
				const units = cfg.units as number;
				const kernel = Float32Array.from(weight(name, 'kernel')!);
				const bias = cfg.use_bias === false ? new Float32Array(units) : Float32Array.from(weight(name, 'bias')!);
				ops.push({ kind: 'dense', input: input!.name, output: name, kernel, kernelShape: [input!.shape[0], units], bias, activation: activationOf(cfg.activation, name) });
				tensors.set(name, { name, shape: [units] });
				break;
			}
			default:
				throw new CompileError(`layer ${name}: ${layer.class_name} is not compiled`);
		}
	}
	let output = tensors.get(target)!;
	if (output.shape.length === 3) {
		ops.push({ kind: 'globalAveragePool', input: output.name, output: 'features', ...(spec.pooling === 'gem' ? { power: GEM_POWER } : {}) });
		output = { name: 'features', shape: [output.shape[2]] };
	} else if (output.shape.length !== 1) {
		throw new CompileError(`the feature layer has shape ${JSON.stringify(output.shape)}`);
	}
	return { input: inputName, inputShape: [height, width, 3], output: output.name, featureSize: output.shape[0], ops };
}
