/**
 * The SentencePiece unigram tokenizer of Universal Sentence Encoder Lite, as
 * `@tensorflow-models/universal-sentence-encoder` implements it (Apache-2.0): the most likely
 * segmentation into vocabulary pieces (Viterbi over piece log-probabilities), unknown characters as
 * id 0, runs of unknowns merged. That package cannot be a dependency (it requires tfjs-core 3), so
 * this is a port; test/text.test.ts checks it against the original.
 */

/** `▁`: SentencePiece's mark for a space, and for the start of the text. */
const SEPARATOR = '\u2581';
/** Ids 0-5 are `<unk>`, `<s>`, `</s>` and three spare ids, never produced by segmentation. */
const RESERVED_PIECES = 6;
const UNKNOWN = 0;

/** [piece, log-probability], as vocab.json lists them; the index is the id. */
export type Vocabulary = [string, number][];

interface TrieNode {
	children: Map<string, TrieNode>;
	/** Id of the piece ending here, -1 when none does. */
	id: number;
}

export class Tokenizer {
	private readonly root: TrieNode = { children: new Map(), id: -1 };
	private readonly lengths: number[];

	constructor(private readonly vocabulary: Vocabulary) {
		// Lengths in code points, as the text is walked.
		this.lengths = vocabulary.map(([piece]) => [...piece].length);
		for (let id = RESERVED_PIECES; id < vocabulary.length; id++) {
			let node = this.root;
			for (const symbol of vocabulary[id][0]) {
				let child = node.children.get(symbol);
				if (!child) node.children.set(symbol, (child = { children: new Map(), id: -1 }));
				node = child;
			}
			node.id = id;
		}
	}

	encode(text: string): number[] {
		const normalized = text.normalize('NFKC');
		if (!normalized.length) return [];
		const symbols = [...(SEPARATOR + normalized.replace(/ /g, SEPARATOR))];
		const n = symbols.length;
		// best[end]: score of the best segmentation of symbols[0, end); last[end]: its last piece.
		const best = new Float64Array(n + 1);
		const last = new Int32Array(n + 1);
		const consider = (end: number, id: number, score: number) => {
			// The original's test: 0 doubles as "not reached yet", so a later tie or a 0 score wins.
			if (best[end] === 0 || score >= best[end]) {
				best[end] = score;
				last[end] = id;
			}
		};
		for (let start = 0; start < n; start++) {
			let node = this.root.children.get(symbols[start]);
			let matched = false;
			for (let end = start + 1; node; end++) {
				if (node.id >= 0) {
					matched = true;
					consider(end, node.id, this.vocabulary[node.id][1] + best[start]);
				}
				node = end < n ? node.children.get(symbols[end]) : undefined;
			}
			if (!matched) consider(start + 1, UNKNOWN, best[start]);
		}
		const ids: number[] = [];
		for (let end = n; end > 0; end -= this.lengths[last[end]]) ids.push(last[end]);
		ids.reverse();
		return ids.filter((id, i) => !(id === UNKNOWN && ids[i - 1] === UNKNOWN));
	}
}
