/**
 * Full-batch multinomial logistic regression (a linear softmax head) solved with L-BFGS. The
 * problem is convex and, with a few thousand rows, small: every step sees all the data, so no
 * learning rate, batch size or epoch count has to be guessed, and the answer depends on the data
 * and the regularisation only. Written out here (about a hundred lines) because no maintained npm
 * package offers L-BFGS on typed arrays without pulling in a numerics framework.
 */

/** The rows a fit sees: standardised features, one after another, with their class and weight. */
export interface SoftmaxProblem {
	/** Row-major [rows, inputs]; float64, as ONNX Runtime multiplies it (see products.ts). */
	x: Float64Array;
	inputs: number;
	classes: number;
	target: Int32Array;
	/** Each row's weight, summing to 1: the loss is the weighted mean cross-entropy. */
	weight: Float64Array;
}

/** Weights as L-BFGS sees them: the kernel as a head keeps it ([inputs, classes], row-major), then the biases. */
export type SoftmaxParameters = Float64Array;

export const parameterCount = (p: Pick<SoftmaxProblem, 'inputs' | 'classes'>) => p.classes * (p.inputs + 1);

/**
 * Weighted cross-entropy plus `l2 / 2` times the squared kernel (biases are not penalised), and its
 * gradient into `gradient`. Rows go four at a time and classes two at a time: each pass over a row
 * block loads a feature once for two classes and a weight once for four rows, eight products per six
 * loads, which is what bounds a loop like this in JS (a quarter faster than one class per pass).
 */
export function softmaxLoss(problem: SoftmaxProblem, l2: number, w: SoftmaxParameters, gradient: Float64Array): number {
	const { x, inputs: d, classes: k, target, weight } = problem;
	const n = target.length;
	const biasAt = k * d;
	gradient.fill(0);
	// Logits, then the loss's derivative by them, of the block's four rows: [row, class].
	const z = new Float64Array(4 * k);
	let loss = 0;
	for (let r = 0; r < n; r += 4) {
		const rows = Math.min(4, n - r);
		// Past the last row the block repeats it; its derivative is set to 0 below.
		const x0 = r * d;
		const x1 = Math.min(r + 1, n - 1) * d;
		const x2 = Math.min(r + 2, n - 1) * d;
		const x3 = Math.min(r + 3, n - 1) * d;
		let c = 0;
		for (; c + 1 < k; c += 2) {
			let s0 = 0;
			let s1 = 0;
			let s2 = 0;
			let s3 = 0;
			let t0 = 0;
			let t1 = 0;
			let t2 = 0;
			let t3 = 0;
			for (let j = 0, at = c; j < d; j++, at += k) {
				const u = w[at];
				const v = w[at + 1];
				const p0 = x[x0 + j];
				const p1 = x[x1 + j];
				const p2 = x[x2 + j];
				const p3 = x[x3 + j];
				s0 += u * p0;
				s1 += u * p1;
				s2 += u * p2;
				s3 += u * p3;
				t0 += v * p0;
				t1 += v * p1;
				t2 += v * p2;
				t3 += v * p3;
			}
			setLogits(z, k, c, s0, s1, s2, s3, w[biasAt + c]);
			setLogits(z, k, c + 1, t0, t1, t2, t3, w[biasAt + c + 1]);
		}
		// An odd class count leaves one class, on its own.
		if (c < k) {
			let s0 = 0;
			let s1 = 0;
			let s2 = 0;
			let s3 = 0;
			for (let j = 0, at = c; j < d; j++, at += k) {
				const u = w[at];
				s0 += u * x[x0 + j];
				s1 += u * x[x1 + j];
				s2 += u * x[x2 + j];
				s3 += u * x[x3 + j];
			}
			setLogits(z, k, c, s0, s1, s2, s3, w[biasAt + c]);
		}
		for (let q = 0; q < 4; q++) {
			const at = q * k;
			if (q >= rows) {
				z.fill(0, at, at + k);
				continue;
			}
			loss += rowLoss(z, at, k, target[r + q], weight[r + q]);
			for (let c = 0; c < k; c++) gradient[biasAt + c] += z[at + c];
		}
		for (c = 0; c + 1 < k; c += 2) {
			const d0 = z[c];
			const d1 = z[k + c];
			const d2 = z[2 * k + c];
			const d3 = z[3 * k + c];
			const f0 = z[c + 1];
			const f1 = z[k + c + 1];
			const f2 = z[2 * k + c + 1];
			const f3 = z[3 * k + c + 1];
			for (let j = 0, at = c; j < d; j++, at += k) {
				const p0 = x[x0 + j];
				const p1 = x[x1 + j];
				const p2 = x[x2 + j];
				const p3 = x[x3 + j];
				gradient[at] += d0 * p0 + d1 * p1 + d2 * p2 + d3 * p3;
				gradient[at + 1] += f0 * p0 + f1 * p1 + f2 * p2 + f3 * p3;
			}
		}
		if (c < k) {
			const d0 = z[c];
			const d1 = z[k + c];
			const d2 = z[2 * k + c];
			const d3 = z[3 * k + c];
			for (let j = 0, at = c; j < d; j++, at += k) gradient[at] += d0 * x[x0 + j] + d1 * x[x1 + j] + d2 * x[x2 + j] + d3 * x[x3 + j];
		}
	}
	return loss + penalty(l2, w, gradient, biasAt);
}

/**
 * One row's weighted cross-entropy from its logits `z[at..at+k)`, which it replaces by the loss's
 * derivative by them: the row's weight times (softmax − one-hot of class `y`).
 */
export function rowLoss(z: Float64Array, at: number, k: number, y: number, weight: number): number {
	let max = -Infinity;
	for (let c = 0; c < k; c++) max = Math.max(max, z[at + c]);
	let sum = 0;
	for (let c = 0; c < k; c++) sum += z[at + c] = Math.exp(z[at + c] - max);
	const loss = -weight * Math.log(Math.max(z[at + y] / sum, 1e-300));
	for (let c = 0; c < k; c++) z[at + c] = weight * (z[at + c] / sum - (c === y ? 1 : 0));
	return loss;
}

/** `l2 / 2` times the squared kernel (the first `kernelSize` weights; biases go free), its gradient added to `gradient`. */
export function penalty(l2: number, w: SoftmaxParameters, gradient: Float64Array, kernelSize: number): number {
	let squares = 0;
	for (let j = 0; j < kernelSize; j++) {
		squares += w[j] * w[j];
		gradient[j] += l2 * w[j];
	}
	return (l2 / 2) * squares;
}

/** The four rows' logits of class `c` in the block's [row, class] scratch. */
function setLogits(z: Float64Array, k: number, c: number, s0: number, s1: number, s2: number, s3: number, bias: number): void {
	z[c] = s0 + bias;
	z[k + c] = s1 + bias;
	z[2 * k + c] = s2 + bias;
	z[3 * k + c] = s3 + bias;
}

/** Every row's logits under `w`, [rows, classes]; four classes per pass over a row. */
export function softmaxLogits(problem: Pick<SoftmaxProblem, 'x' | 'inputs' | 'classes' | 'target'>, w: SoftmaxParameters): Float64Array {
	const { x, inputs: d, classes: k } = problem;
	const out = new Float64Array(problem.target.length * k);
	for (let r = 0; r < problem.target.length; r++) {
		const row = r * d;
		const at = r * k;
		let c = 0;
		for (; c + 4 <= k; c += 4) {
			let s0 = 0;
			let s1 = 0;
			let s2 = 0;
			let s3 = 0;
			for (let j = 0, at = c; j < d; j++, at += k) {
				const xj = x[row + j];
				s0 += w[at] * xj;
				s1 += w[at + 1] * xj;
				s2 += w[at + 2] * xj;
				s3 += w[at + 3] * xj;
			}
			out[at + c] = s0 + w[k * d + c];
			out[at + c + 1] = s1 + w[k * d + c + 1];
			out[at + c + 2] = s2 + w[k * d + c + 2];
			out[at + c + 3] = s3 + w[k * d + c + 3];
		}
		for (; c < k; c++) {
			let s = 0;
			for (let j = 0, at = c; j < d; j++, at += k) s += w[at] * x[row + j];
			out[at + c] = s + w[k * d + c];
		}
	}
	return out;
}

export interface LbfgsOptions {
	maxIterations: number;
	/** Stop once the largest gradient component is under this. */
	gradientTolerance: number;
	/** Called after each iteration with the objective. */
	onIteration?: (iteration: number, loss: number) => void;
}

const MEMORY = 10;

/**
 * Minimises `objective` from `w` (updated in place) with L-BFGS and a backtracking line search
 * (Armijo). Returns the iterations taken and the final objective. Deterministic: no randomness.
 * The objective may answer asynchronously: ONNX Runtime's session.run does. The loops over the
 * weights are in small synchronous functions: V8 does not optimise a loop inside an async function
 * while it runs (no on-stack replacement), and in a fresh worker that left them interpreted.
 */
export async function lbfgs(
	objective: (w: Float64Array, gradient: Float64Array) => number | Promise<number>,
	w: Float64Array,
	options: LbfgsOptions,
): Promise<{ iterations: number; loss: number }> {
	const size = w.length;
	let gradient = new Float64Array(size);
	let loss = await objective(w, gradient);
	const memory: Memory = { steps: [], changes: [], rhos: [], alphas: new Float64Array(MEMORY) };
	const direction = new Float64Array(size);
	const trial = new Float64Array(size);
	let trialGradient = new Float64Array(size);
	let iteration = 0;
	while (iteration < options.maxIterations && maxAbs(gradient) > options.gradientTolerance) {
		const slope = descentDirection(gradient, memory, direction);
		let step = 1;
		let trialLoss = Infinity;
		for (let tries = 0; tries < 30; tries++, step /= 2) {
			moveTo(trial, w, step, direction);
			trialLoss = await objective(trial, trialGradient);
			if (trialLoss <= loss + 1e-4 * step * slope) break;
		}
		if (!(trialLoss < loss)) break;
		remember(memory, difference(trial, w), difference(trialGradient, gradient));
		w.set(trial);
		[gradient, trialGradient] = [trialGradient, gradient];
		const decrease = loss - trialLoss;
		loss = trialLoss;
		iteration++;
		options.onIteration?.(iteration, loss);
		if (decrease < 1e-10 * Math.max(1, Math.abs(loss))) break;
	}
	return { iterations: iteration, loss };
}

/** The last MEMORY steps and gradient changes, and 1 / their curvature. */
interface Memory {
	steps: Float64Array[];
	changes: Float64Array[];
	rhos: number[];
	alphas: Float64Array;
}

/** Two-loop recursion: `direction` = -H·gradient; returns the slope along it. */
function descentDirection(gradient: Float64Array, { steps, changes, rhos, alphas }: Memory, direction: Float64Array): number {
	const size = gradient.length;
	for (let j = 0; j < size; j++) direction[j] = -gradient[j];
	for (let m = steps.length - 1; m >= 0; m--) {
		alphas[m] = rhos[m] * dot(steps[m], direction);
		axpy(-alphas[m], changes[m], direction);
	}
	const last = steps.length - 1;
	const scale = last >= 0 ? 1 / (rhos[last] * dot(changes[last], changes[last])) : 1 / Math.max(1, Math.sqrt(dot(gradient, gradient)));
	for (let j = 0; j < size; j++) direction[j] *= scale;
	for (let m = 0; m < steps.length; m++) axpy(alphas[m] - rhos[m] * dot(changes[m], direction), steps[m], direction);
	const slope = dot(gradient, direction);
	if (slope < 0) return slope;
	// Not a descent direction (rounding on a flat stretch): restart from steepest descent.
	steps.length = changes.length = rhos.length = 0;
	const length = Math.max(1, Math.sqrt(dot(gradient, gradient)));
	for (let j = 0; j < size; j++) direction[j] = -gradient[j] / length;
	return dot(gradient, direction);
}

/** Keeps a step and its gradient change, unless the pair lacks positive curvature (it would make the approximation indefinite). */
function remember({ steps, changes, rhos }: Memory, s: Float64Array, y: Float64Array): void {
	const curvature = dot(s, y);
	if (curvature <= 1e-12) return;
	if (steps.length === MEMORY) steps.shift(), changes.shift(), rhos.shift();
	steps.push(s);
	changes.push(y);
	rhos.push(1 / curvature);
}

/** `out = from + step * direction` */
function moveTo(out: Float64Array, from: Float64Array, step: number, direction: Float64Array): void {
	for (let j = 0; j < out.length; j++) out[j] = from[j] + step * direction[j];
}

function difference(a: Float64Array, b: Float64Array): Float64Array {
	const out = new Float64Array(a.length);
	for (let j = 0; j < a.length; j++) out[j] = a[j] - b[j];
	return out;
}

function dot(a: Float64Array, b: Float64Array): number {
	let s = 0;
	for (let j = 0; j < a.length; j++) s += a[j] * b[j];
	return s;
}

function axpy(alpha: number, x: Float64Array, y: Float64Array): void {
	for (let j = 0; j < x.length; j++) y[j] += alpha * x[j];
}

function maxAbs(a: Float64Array): number {
	let m = 0;
	for (let j = 0; j < a.length; j++) m = Math.max(m, Math.abs(a[j]));
	return m;
}
