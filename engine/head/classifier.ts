import { argMax, predictHead, type Head } from './head';

export const UNKNOWN_LABEL = 'unknown';

export interface Prediction {
	/** The top class, or `unknown` when its probability is under the threshold. */
	label: string;
	confidence: number;
	/** The `topK` best classes, best first. */
	scores: { label: string; score: number }[];
}

export interface ClassifyOptions {
	topK?: number;
	/** 0..1; a best score under it gives the label `unknown`. */
	threshold?: number;
}

export function classify(head: Head, features: Float32Array[], options: ClassifyOptions = {}): Prediction[] {
	return predictionsOf(head, predictHead(head, features), options);
}

/** Predictions from class probabilities in the head's label order. */
export function predictionsOf(head: Head, probabilitiesPerItem: Float32Array[], options: ClassifyOptions = {}): Prediction[] {
	const topK = Math.max(1, Math.min(options.topK ?? 3, head.labels.length));
	const threshold = options.threshold ?? 0;
	return probabilitiesPerItem.map((probabilities) => {
		const best = argMax(probabilities);
		const confidence = probabilities[best];
		const scores = head.labels
			.map((label, i) => ({ label, score: probabilities[i] }))
			.sort((a, b) => b.score - a.score)
			.slice(0, topK);
		return { label: confidence >= threshold ? head.labels[best] : UNKNOWN_LABEL, confidence, scores };
	});
}
