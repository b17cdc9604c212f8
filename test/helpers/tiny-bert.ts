import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { seededRandom } from '../../engine/head/random';

/**
 * A BERT-shaped sentence encoder small enough to build in a test: token, position and type
 * embeddings, one single-head self-attention layer that honours the attention mask, then
 * `tanh(attention · W + b + embeddings)` as `last_hidden_state`. Random weights; `referenceHidden`
 * computes the same function in plain JS.
 */
export const HIDDEN = 8;
export const MAX_POSITIONS = 64;

const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];
const WORDS = ['the', 'a', 'cat', 'dog', 'sat', 'on', 'mat', 'cafe', 'naive', 'hello', 'world', 'is', 'here', '.', ',', '!', '猫', '犬', '日', '本'];
const LETTERS = 'abcdefghijklmnopqrstuvwxyz'.split('');
export const VOCAB: string[] = [...SPECIALS, ...WORDS, ...LETTERS, ...LETTERS.map((l) => `##${l}`)];
export const TOKEN_ID = new Map(VOCAB.map((token, id) => [token, id]));

export interface TinyBertWeights {
	word: Float32Array; // [vocab, hidden]
	position: Float32Array; // [MAX_POSITIONS, hidden]
	type: Float32Array; // [2, hidden]
	value: Float32Array; // [hidden, hidden]
	dense: Float32Array; // [hidden, hidden]
	bias: Float32Array; // [hidden]
}

export function tinyBertWeights(seed = 7): TinyBertWeights {
	const random = seededRandom(seed);
	const values = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1);
	return {
		word: values(VOCAB.length * HIDDEN),
		position: values(MAX_POSITIONS * HIDDEN),
		type: values(2 * HIDDEN),
		value: values(HIDDEN * HIDDEN),
		dense: values(HIDDEN * HIDDEN),
		bias: values(HIDDEN),
	};
}

export function tinyBertOnnx(w: TinyBertWeights): Uint8Array {
	const F = onnx.TensorProto.DataType.FLOAT;
	const I64 = onnx.TensorProto.DataType.INT64;
	const floats = (name: string, dims: number[], values: Float32Array): onnx.ITensorProto => ({ name, dims, dataType: F, rawData: new Uint8Array(values.buffer.slice(0)) });
	const longs = (name: string, values: number[]): onnx.ITensorProto => ({
		name,
		dims: [values.length],
		dataType: I64,
		rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer),
	});
	const scalar = (name: string, value: number): onnx.ITensorProto => ({ ...longs(name, [value]), dims: [] });
	const node = (opType: string, input: string[], output: string, attribute: onnx.IAttributeProto[] = []): onnx.INodeProto => ({ opType, input, output: [output], attribute });
	const intAttr = (name: string, i: number): onnx.IAttributeProto => ({ name, i, type: onnx.AttributeProto.AttributeType.INT });
	const intsAttr = (name: string, ints: number[]): onnx.IAttributeProto => ({ name, ints, type: onnx.AttributeProto.AttributeType.INTS });
	const io = (name: string, elemType: number, dims: (number | string)[]): onnx.IValueInfoProto => ({
		name,
		type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
	});
	const graph: onnx.IGraphProto = {
		name: 'tiny_bert',
		initializer: [
			floats('word_embeddings', [VOCAB.length, HIDDEN], w.word),
			floats('position_embeddings', [MAX_POSITIONS, HIDDEN], w.position),
			floats('type_embeddings', [2, HIDDEN], w.type),
			floats('value_w', [HIDDEN, HIDDEN], w.value),
			floats('dense_w', [HIDDEN, HIDDEN], w.dense),
			floats('dense_b', [HIDDEN], w.bias),
			scalar('zero', 0),
			scalar('one', 1),
			longs('axis1', [1]),
			{ name: 'scale', dims: [], dataType: F, rawData: new Uint8Array(Float32Array.of(1 / Math.sqrt(HIDDEN)).buffer) },
			{ name: 'masked', dims: [], dataType: F, rawData: new Uint8Array(Float32Array.of(-10000).buffer) },
			{ name: 'onef', dims: [], dataType: F, rawData: new Uint8Array(Float32Array.of(1).buffer) },
		],
		node: [
			node('Gather', ['word_embeddings', 'input_ids'], 'words'),
			node('Shape', ['input_ids'], 'shape'),
			node('Gather', ['shape', 'one'], 'length', [intAttr('axis', 0)]),
			node('Range', ['zero', 'length', 'one'], 'positions'),
			node('Gather', ['position_embeddings', 'positions'], 'position_vectors'),
			node('Gather', ['type_embeddings', 'token_type_ids'], 'type_vectors'),
			node('Add', ['words', 'position_vectors'], 'sum1'),
			node('Add', ['sum1', 'type_vectors'], 'embeddings'),
			// Scores [b, s, s] = E·Eᵀ/√h, padded keys pushed to -10000 as BERT does.
			node('Transpose', ['embeddings'], 'embeddings_t', [intsAttr('perm', [0, 2, 1])]),
			node('MatMul', ['embeddings', 'embeddings_t'], 'raw_scores'),
			node('Mul', ['raw_scores', 'scale'], 'scaled_scores'),
			node('Cast', ['attention_mask'], 'mask_f', [intAttr('to', F)]),
			node('Sub', ['onef', 'mask_f'], 'inverted_mask'),
			node('Mul', ['inverted_mask', 'masked'], 'mask_bias2'),
			node('Unsqueeze', ['mask_bias2', 'axis1'], 'mask_bias'),
			node('Add', ['scaled_scores', 'mask_bias'], 'scores'),
			node('Softmax', ['scores'], 'probabilities', [intAttr('axis', -1)]),
			node('MatMul', ['embeddings', 'value_w'], 'values'),
			node('MatMul', ['probabilities', 'values'], 'context'),
			node('MatMul', ['context', 'dense_w'], 'projected'),
			node('Add', ['projected', 'dense_b'], 'biased'),
			node('Add', ['biased', 'embeddings'], 'residual'),
			node('Tanh', ['residual'], 'last_hidden_state'),
		],
		input: [io('input_ids', I64, ['batch', 'sequence']), io('attention_mask', I64, ['batch', 'sequence']), io('token_type_ids', I64, ['batch', 'sequence'])],
		output: [io('last_hidden_state', F, ['batch', 'sequence', HIDDEN])],
	};
	const model = onnx.ModelProto.create({ irVersion: 8, producerName: 'tiny-bert-test', opsetImport: [{ domain: '', version: 13 }], graph });
	return onnx.ModelProto.encode(model).finish();
}

/** The hidden states [tokens, hidden] of one unpadded sequence, in float64. */
export function referenceHidden(w: TinyBertWeights, ids: number[]): number[][] {
	const n = ids.length;
	const row = (m: Float32Array, i: number) => Array.from(m.subarray(i * HIDDEN, (i + 1) * HIDDEN));
	const times = (v: number[], m: Float32Array) => Array.from({ length: HIDDEN }, (_, j) => v.reduce((s, x, k) => s + x * m[k * HIDDEN + j], 0));
	const e = ids.map((id, t) => row(w.word, id).map((x, j) => x + w.position[t * HIDDEN + j] + w.type[j]));
	const values = e.map((v) => times(v, w.value));
	return e.map((q) => {
		const scores = e.map((k) => q.reduce((s, x, j) => s + x * k[j], 0) / Math.sqrt(HIDDEN));
		const top = Math.max(...scores);
		const exps = scores.map((s) => Math.exp(s - top));
		const total = exps.reduce((a, b) => a + b, 0);
		const context = Array.from({ length: HIDDEN }, (_, j) => exps.reduce((s, p, t) => s + (p / total) * values[t][j], 0));
		return times(context, w.dense).map((x, j) => Math.tanh(x + w.bias[j] + q[j]));
	}).slice(0, n);
}

/** Mean over tokens, then unit length: what a sentence-transformers mean-pooling model returns. */
export function referenceEmbedding(w: TinyBertWeights, ids: number[]): number[] {
	const hidden = referenceHidden(w, ids);
	const mean = Array.from({ length: HIDDEN }, (_, j) => hidden.reduce((s, h) => s + h[j], 0) / hidden.length);
	const norm = Math.hypot(...mean);
	return mean.map((x) => x / norm);
}

/** A BERT uncased WordPiece tokenizer.json over VOCAB, as the `tokenizers` library writes them. */
export function tinyBertTokenizerJson(): object {
	const special = (content: string) => ({ id: TOKEN_ID.get(content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
	const token = (id: string) => ({ SpecialToken: { id, type_id: 0 } });
	return {
		version: '1.0',
		truncation: null,
		padding: null,
		added_tokens: SPECIALS.map(special),
		normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
		pre_tokenizer: { type: 'BertPreTokenizer' },
		post_processor: {
			type: 'TemplateProcessing',
			single: [token('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, token('[SEP]')],
			pair: [token('[CLS]'), { Sequence: { id: 'A', type_id: 0 } }, token('[SEP]'), { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
			special_tokens: Object.fromEntries(['[CLS]', '[SEP]'].map((t) => [t, { id: t, ids: [TOKEN_ID.get(t)], tokens: [t] }])),
		},
		decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
		model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: Object.fromEntries(TOKEN_ID) },
	};
}

/**
 * Writes the tiny model as a Hugging Face repository would be laid out on a mirror:
 * `<root>/huggingface.co/<repo>/resolve/main/{config.json, tokenizer.json, tokenizer_config.json, onnx/<file>}`.
 * Returns the folder of the revision.
 */
export function writeTinyBertRepo(root: string, repo: string, weights: TinyBertWeights, onnxFile = 'model.onnx'): string {
	const dir = path.join(root, 'huggingface.co', ...repo.split('/'), 'resolve', 'main');
	mkdirSync(path.join(dir, 'onnx'), { recursive: true });
	writeFileSync(
		path.join(dir, 'config.json'),
		JSON.stringify({ model_type: 'bert', hidden_size: HIDDEN, max_position_embeddings: MAX_POSITIONS, pad_token_id: 0, vocab_size: VOCAB.length, type_vocab_size: 2 }),
	);
	writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tinyBertTokenizerJson()));
	writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: true, model_max_length: 512, tokenizer_class: 'BertTokenizer' }));
	writeFileSync(path.join(dir, 'onnx', onnxFile), tinyBertOnnx(weights));
	return dir;
}
