/** What eval.ts and eval-text.ts share: the seeds to run and the mean and spread of their figures. */

export const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

/** Lowest, highest and (population) standard deviation. */
export const spread = (values: number[]) => ({ min: Math.min(...values), max: Math.max(...values), std: Math.sqrt(mean(values.map((v) => (v - mean(values)) ** 2))) });

/** `--seeds N` seeds from `--seed S` on: S, S+1, ... */
export function seedsOf(args: { seed?: string; seeds?: string }): number[] {
	const first = Number(args.seed ?? 42);
	const count = Number(args.seeds ?? 1);
	if (!Number.isInteger(first) || !Number.isInteger(count) || count < 1) throw new Error(`--seed must be a whole number and --seeds a whole number of at least 1`);
	return Array.from({ length: count }, (_, i) => first + i);
}

/** The means over the runs, and the accuracy's spread. */
export function summarise(runs: { accuracy: number; macroF1: number }[]) {
	const accuracies = runs.map((r) => r.accuracy);
	return { accuracy: mean(accuracies), macroF1: mean(runs.map((r) => r.macroF1)), accuracySpread: spread(accuracies) };
}

export function describeSpread(result: ReturnType<typeof summarise>, runs: number): string {
	const { min, max, std } = result.accuracySpread;
	return `accuracy ${result.accuracy.toFixed(3)} (${runs} seeds: min ${min.toFixed(3)}, max ${max.toFixed(3)}, sd ${std.toFixed(3)}), macro-F1 ${result.macroF1.toFixed(3)}`;
}
