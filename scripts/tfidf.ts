/**
 * TF-IDF features: the classic text baseline the sentence encoder is measured against. Words are
 * runs of letters and digits, lower-cased; the vocabulary and document frequencies come from the
 * texts it is fitted on; each vector is scaled to length 1.
 */
export function words(text: string): string[] {
	return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

export function fitTfidf(texts: string[]): (text: string) => Float32Array {
	const index = new Map<string, number>();
	const documentFrequency: number[] = [];
	for (const text of texts) {
		for (const word of new Set(words(text))) {
			if (!index.has(word)) {
				index.set(word, index.size);
				documentFrequency.push(0);
			}
			documentFrequency[index.get(word)!]++;
		}
	}
	// Smoothed as scikit-learn does: a word in every text still counts a little.
	const idf = documentFrequency.map((df) => Math.log((1 + texts.length) / (1 + df)) + 1);
	return (text) => {
		const vector = new Float32Array(index.size);
		for (const word of words(text)) {
			const i = index.get(word);
			if (i !== undefined) vector[i] += idf[i];
		}
		const norm = Math.hypot(...vector) || 1;
		return vector.map((v) => v / norm);
	};
}
