export interface ClassMetrics {
	label: string;
	precision: number;
	recall: number;
	f1: number;
	support: number;
}

export interface Metrics {
	accuracy: number;
	macroF1: number;
	perClass: ClassMetrics[];
	/** confusionMatrix[actual][predicted], rows and columns in `labels` order. */
	confusionMatrix: number[][];
	labels: string[];
	count: number;
}

export function computeMetrics(labels: string[], actual: number[], predicted: number[]): Metrics {
	const k = labels.length;
	const confusionMatrix = labels.map(() => new Array<number>(k).fill(0));
	actual.forEach((a, i) => confusionMatrix[a][predicted[i]]++);
	const perClass = labels.map((label, c) => {
		const truePositives = confusionMatrix[c][c];
		const support = confusionMatrix[c].reduce((a, b) => a + b, 0);
		const predictedCount = confusionMatrix.reduce((n, row) => n + row[c], 0);
		const precision = predictedCount ? truePositives / predictedCount : 0;
		const recall = support ? truePositives / support : 0;
		const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
		return { label, precision, recall, f1, support };
	});
	const correct = labels.reduce((n, _, c) => n + confusionMatrix[c][c], 0);
	// Classes absent from the evaluated set would drag macro-F1 down for no fault of the model.
	const present = perClass.filter((m) => m.support > 0);
	return {
		accuracy: actual.length ? correct / actual.length : 0,
		macroF1: present.length ? present.reduce((n, m) => n + m.f1, 0) / present.length : 0,
		perClass,
		confusionMatrix,
		labels,
		count: actual.length,
	};
}
