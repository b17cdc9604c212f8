/**
 * Static int8 quantization of a compiled plan: per-channel symmetric int8 weights, uint8
 * activations with one scale and zero point per tensor, biases corrected for the weights'
 * rounding. Activation ranges and channel means come from the network itself (ReLU6's cap and the
 * batch-norm statistics folded into each convolution) or from the float32 values seen on
 * calibration images. The first layers stay in float (floatLayers).
 */
import type { Activation, ChannelStats, CompiledPlan } from './compiler';
import { CompileError } from './compiler';

/** [min, max] of a tensor's values; always holds 0, so that zero (padding, ReLU's floor) is exact. */
export type Range = [number, number];

/** How the activation ranges were found; a model's manifest and the compiled cache record it. */
export type Calibration = 'network' | 'images';

/** What the int8 graph is built from: each quantized tensor's range and the mean of each of its channels. */
export interface ActivationStats {
	ranges: Map<string, Range>;
	means: Map<string, number[]>;
}

/** The network's own word on a value: batch-norm spreads of this many standard deviations either side of the mean. */
const SPREADS = 4;

export interface QuantParams {
	scale: number;
	zeroPoint: number;
}

/** uint8 with the range's ends at 0 and 255 (0 exactly representable). */
export function activationParams([lo, hi]: Range): QuantParams {
	const min = Math.min(lo, 0);
	const max = Math.max(hi, 0);
	const scale = max > min ? (max - min) / 255 : 1;
	return { scale, zeroPoint: Math.min(255, Math.max(0, Math.round(-min / scale))) };
}

/**
 * Symmetric int8 per output channel: `weights` is [out, ...] flattened (ONNX's OIHW), the scale of
 * channel o maps its largest magnitude to 127.
 */
export function quantizeWeights(weights: Float32Array, outChannels: number): { values: Int8Array; scales: Float32Array } {
	const per = weights.length / outChannels;
	const values = new Int8Array(weights.length);
	const scales = new Float32Array(outChannels);
	for (let o = 0; o < outChannels; o++) {
		let max = 0;
		for (let i = o * per; i < (o + 1) * per; i++) max = Math.max(max, Math.abs(weights[i]));
		const scale = max > 0 ? max / 127 : 1;
		scales[o] = scale;
		for (let i = o * per; i < (o + 1) * per; i++) values[i] = Math.round(weights[i] / scale);
	}
	return { values, scales };
}

/** int32 bias at scale input scale x weight scale, as integer convolution kernels add it. */
export function quantizeBias(bias: Float32Array, inputScale: number, weightScales: Float32Array): { values: Int32Array; scales: Float32Array } {
	const scales = weightScales.map((s) => s * inputScale);
	const values = new Int32Array(bias.length);
	bias.forEach((b, i) => (values[i] = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, Math.round(b / scales[i])))));
	return { values, scales };
}

/**
 * The float bias that cancels, on average, what rounding the weights moved each output channel
 * by: each weight's rounding error times the mean of the input channel it reads (bias correction,
 * Nagel et al. 2019, "Data-Free Quantization"). Unbiased rounding still shifts the means of
 * MobileNet's depthwise and wide pointwise layers a little and the same way for every image; over
 * 27 layers that took the features to a cosine of 0.988 with float32, and 0.997 with it.
 * `weights` and `quantized` are OIHW, `groupInputs` the input channels each group reads (1 for depthwise).
 */
export function correctBias(
	bias: Float32Array,
	weights: Float32Array,
	quantized: { values: Int8Array; scales: Float32Array },
	inputMean: ArrayLike<number>,
	groupInputs: number,
): Float32Array {
	const outChannels = quantized.scales.length;
	const per = weights.length / outChannels;
	const taps = per / groupInputs;
	const groupOutputs = outChannels / (inputMean.length / groupInputs);
	return bias.map((b, o) => {
		const firstInput = Math.floor(o / groupOutputs) * groupInputs;
		let shift = 0;
		for (let k = 0; k < per; k++) {
			const error = quantized.values[o * per + k] * quantized.scales[o] - weights[o * per + k];
			shift += error * inputMean[firstInput + Math.floor(k / taps)];
		}
		return b - shift;
	});
}

/** Standard normal density and distribution (Abramowitz and Stegun 26.2.17, error under 7.5e-8). */
function normalPdf(z: number): number {
	return Math.exp(-z * z / 2) / Math.sqrt(2 * Math.PI);
}
function normalCdf(z: number): number {
	const t = 1 / (1 + 0.2316419 * Math.abs(z));
	const tail = normalPdf(z) * t * (0.31938153 + t * (-0.356563782 + t * (1.781477937 + t * (-1.821255978 + t * 1.330274429))));
	return z >= 0 ? 1 - tail : tail;
}

/** E[max(X - a, 0)] for X ~ N(mean, std). */
function meanAbove(mean: number, std: number, a: number): number {
	if (std === 0) return Math.max(mean - a, 0);
	const z = (mean - a) / std;
	return (mean - a) * normalCdf(z) + std * normalPdf(z);
}

/** Mean of each channel after the activation, the values before it spread as the normal law of `stats`. */
function activatedMeans(stats: ChannelStats, activation: Activation, where: string): number[] {
	const mean = [...stats.mean];
	switch (activation) {
		case 'linear':
			return mean;
		case 'relu':
			return mean.map((m, c) => meanAbove(m, stats.std[c], 0));
		case 'relu6':
			return mean.map((m, c) => meanAbove(m, stats.std[c], 0) - meanAbove(m, stats.std[c], 6));
		default:
			throw new CompileError(`${where}: no mean is known for a ${activation} activation without calibration images`);
	}
}

function activate([lo, hi]: Range, activation: Activation, where: string): Range {
	switch (activation) {
		case 'linear':
			return [lo, hi];
		case 'relu':
			return [0, Math.max(hi, 0)];
		case 'relu6':
			return [0, Math.min(Math.max(hi, 0), 6)];
		default:
			throw new CompileError(`${where}: no range is known for a ${activation} activation without calibration images`);
	}
}

function statsRange(stats: ChannelStats): Range {
	let lo = 0;
	let hi = 0;
	stats.mean.forEach((m, c) => {
		lo = Math.min(lo, m - SPREADS * stats.std[c]);
		hi = Math.max(hi, m + SPREADS * stats.std[c]);
	});
	return [lo, hi];
}

/**
 * Ranges and channel means of every quantized tensor known without data: each batch-normalised
 * convolution's output spreads as its folded statistics say (a normal law), capped by its
 * activation; a sum of such outputs spreads as independent values do. Throws CompileError when
 * some tensor cannot be told this way.
 */
export function networkStats(plan: CompiledPlan): ActivationStats {
	const ranges = new Map<string, Range>();
	const means = new Map<string, number[]>();
	const stats = new Map<string, ChannelStats>();
	for (const op of plan.ops) {
		switch (op.kind) {
			case 'conv': {
				if (!op.stats) throw new CompileError(`${op.output}: a convolution without batch normalisation has no known range`);
				if (op.activation === 'linear') stats.set(op.output, op.stats);
				ranges.set(op.output, activate(statsRange(op.stats), op.activation, op.output));
				means.set(op.output, activatedMeans(op.stats, op.activation, op.output));
				break;
			}
			case 'add': {
				const parts = op.inputs.map((i) => stats.get(i));
				if (parts.some((p) => !p)) throw new CompileError(`${op.output}: a sum of values of unknown spread`);
				const sum: ChannelStats = {
					mean: parts[0]!.mean.map((_, c) => parts.reduce((s, p) => s + p!.mean[c], 0)),
					std: parts[0]!.std.map((_, c) => Math.sqrt(parts.reduce((s, p) => s + p!.std[c] ** 2, 0))),
				};
				if (op.activation === 'linear') stats.set(op.output, sum);
				ranges.set(op.output, activate(statsRange(sum), op.activation, op.output));
				means.set(op.output, activatedMeans(sum, op.activation, op.output));
				break;
			}
			case 'activation': {
				const input = ranges.get(op.input);
				const spread = stats.get(op.input);
				if (!input || !spread) throw new CompileError(`${op.output}: input of unknown spread`);
				ranges.set(op.output, activate(input, op.activation, op.output));
				means.set(op.output, activatedMeans(spread, op.activation, op.output));
				break;
			}
			default:
				break;
		}
	}
	return { ranges, means };
}

/**
 * The convolutions the int8 graph computes in float: those that read the image and those that read
 * them. Their outputs are the full-resolution maps every later layer builds on, and rounding them
 * to uint8 cost the features most of their error: on flowers5 photos, MobileNet v1 0.75's mean
 * cosine with float32 lost 6.4e-4 to the first layer's output and 3.3e-4 to the second's, each of
 * the 25 others 1.3e-4 or less. In float they took the whole int8 graph from 0.9978 to 0.9986
 * (v1 0.25: 0.9961 to 0.9978), for about 6% of int8's speed.
 */
export function floatLayers(plan: CompiledPlan): Set<string> {
	const first = plan.ops.filter((op) => op.kind === 'conv' && op.input === plan.input).map((op) => op.output);
	const second = plan.ops.filter((op) => op.kind === 'conv' && first.includes(op.input)).map((op) => op.output);
	return new Set([...first, ...second]);
}

/**
 * The tensors the int8 graph quantizes by a calibrated range: the outputs of convolutions, sums and
 * activations (a float layer's too, which is quantized where an int8 layer reads it).
 */
export function quantizedTensors(plan: CompiledPlan): string[] {
	return plan.ops.filter((op) => op.kind === 'conv' || op.kind === 'add' || op.kind === 'activation').map((op) => op.output);
}

/** [min, max] and channel means of each tensor over a calibration batch. */
export class StatsTracker {
	readonly ranges = new Map<string, Range>();
	readonly means = new Map<string, number[]>();

	/** `values` is NCHW of `dims`. */
	add(name: string, values: ArrayLike<number>, dims: readonly number[]): void {
		let [lo, hi] = this.ranges.get(name) ?? [0, 0];
		const [batch, channels] = dims;
		const area = values.length / (batch * channels);
		const sums = new Float64Array(channels);
		for (let i = 0; i < values.length; i++) {
			const v = values[i];
			if (v < lo) lo = v;
			else if (v > hi) hi = v;
			sums[Math.floor(i / area) % channels] += v;
		}
		this.ranges.set(name, [lo, hi]);
		this.means.set(name, Array.from(sums, (s) => s / (batch * area)));
	}
}

/** Mean and least cosine similarity between paired feature vectors (int8 against float32). */
export function cosineAgreement(a: Float32Array[], b: Float32Array[]): { mean: number; min: number } {
	const cosines = a.map((x, i) => {
		const y = b[i];
		let dot = 0;
		let nx = 0;
		let ny = 0;
		for (let j = 0; j < x.length; j++) {
			dot += x[j] * y[j];
			nx += x[j] * x[j];
			ny += y[j] * y[j];
		}
		return nx === 0 && ny === 0 ? 1 : dot / (Math.sqrt(nx * ny) || 1);
	});
	return { mean: cosines.reduce((s, c) => s + c, 0) / cosines.length, min: Math.min(...cosines) };
}
