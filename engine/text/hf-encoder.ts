import { promises as fs } from 'node:fs';
import type { Tokenizer } from '@huggingface/tokenizers' with { 'resolution-mode': 'import' };
import type * as Ort from 'onnxruntime-node';
import { USE_LITE_ID } from '../backbones/catalog';
import type { HostAuth } from '../net/download';
import { TransferLearningError, errorMessage } from '../errors';
import { onnxRuntime } from '../runtimes/onnx-runtime';
import { settings } from '../settings';
import type { TextEncoder } from './encoder';
import type { HubTextSpec } from './hf-catalog';
import { fetchHubFiles, hubRepoProblem, parseHubJson, type HubFile } from './hf-files';

/** Texts per ONNX Runtime call: padding to the longest of 32 similar lengths wastes little. */
const BATCH_SIZE = 32;

function repoAndFile(spec: HubTextSpec): { repo: string; onnxFile: string } {
	const match = /^https:\/\/huggingface\.co\/([^/]+\/[^/]+)\/resolve\/main\/(onnx\/[A-Za-z0-9_.-]+\.onnx)$/.exec(spec.url);
	if (!match || hubRepoProblem(match[1])) {
		throw new TransferLearningError(`The text model address "${spec.url.slice(0, 200)}" is not a Hugging Face ONNX file`, 'Choose a catalog text model or an hf:<owner>/<name> id');
	}
	return { repo: match[1], onnxFile: match[2] };
}

/** On musl (Alpine) ONNX Runtime does not load, and these models have no other engine here. */
function loadOnnxRuntime(spec: HubTextSpec): typeof Ort {
	try {
		return onnxRuntime();
	} catch (error) {
		throw new TransferLearningError(
			`The text model ${spec.id} needs ONNX Runtime, which does not load on this server: ${errorMessage(error).split('\n')[0]}`,
			`Choose ${USE_LITE_ID} (Universal Sentence Encoder Lite, English), which runs without ONNX Runtime, or run n8n on a glibc-based image (Debian or Ubuntu, not Alpine)`,
		);
	}
}

function loadTokenizer(): typeof import('@huggingface/tokenizers', { with: { 'resolution-mode': 'import' } }) {
	// The package's CommonJS build (its `node.require` export): no require(esm) needed on Node 20.
	return require('@huggingface/tokenizers');
}

/**
 * How many special tokens the tokenizer's template puts after a text ([SEP], </s>), found by
 * encoding one word: truncation keeps them, as the Python tokenizers do.
 */
function closingSpecialTokens(tokenizer: Tokenizer): number {
	const plain = tokenizer.encode('a', { add_special_tokens: false }).ids;
	const full = tokenizer.encode('a', { add_special_tokens: true }).ids;
	for (let start = 0; start + plain.length <= full.length; start++) {
		if (plain.every((id: number, i: number) => full[start + i] === id)) return full.length - start - plain.length;
	}
	return 0;
}

const positiveInteger = (value: unknown) => (typeof value === 'number' && Number.isInteger(value) && value > 0 ? value : undefined);

interface Encoded {
	ids: number[];
	typeIds: number[];
}

export class HubTextEncoder implements TextEncoder {
	readonly backendName = 'onnxruntime';

	private constructor(
		readonly spec: HubTextSpec,
		readonly dimension: number,
		/** The limit in force: the spec's, or less where the model's positions run out first. */
		readonly maxTokens: number,
		private readonly ort: typeof Ort,
		private readonly session: Ort.InferenceSession,
		private readonly tokenizer: Tokenizer,
		private readonly closingSpecials: number,
		private readonly padId: number,
		private readonly output: string,
	) {}

	static async load(spec: HubTextSpec, options: { auth?: HostAuth } = {}): Promise<HubTextEncoder> {
		// Before any download: on Alpine hundreds of megabytes would be fetched for nothing.
		const ort = loadOnnxRuntime(spec);
		const { repo, onnxFile } = repoAndFile(spec);
		const [configFile, tokenizerFile, tokenizerConfigFile, modelFile] = await fetchHubFiles(repo, ['config.json', 'tokenizer.json', 'tokenizer_config.json', onnxFile], options.auth);
		const config = await parseHubJson(configFile);
		const tokenizerConfig = await parseHubJson(tokenizerConfigFile);
		let tokenizer: Tokenizer;
		try {
			tokenizer = new (loadTokenizer().Tokenizer)(await parseHubJson(tokenizerFile), tokenizerConfig);
		} catch (error) {
			throw new TransferLearningError(`${tokenizerFile.location} is not a tokenizer this package can read: ${errorMessage(error)}`, 'Choose a model whose tokenizer.json the Hugging Face tokenizers library reads (BERT, XLM-RoBERTa, MPNet…)');
		}
		const dimension = positiveInteger(config.hidden_size);
		if (!dimension) throw new TransferLearningError(`${configFile.location} has no hidden_size: it is not a transformer encoder's config.json`);
		// RoBERTa-style models number positions from pad_token_id + 1, so two of them are never used by text.
		const positionOffset = /roberta/i.test(String(config.model_type)) ? 2 : 0;
		const maxTokens = Math.min(spec.maxTokens, (positiveInteger(config.max_position_embeddings) ?? Infinity) - positionOffset, positiveInteger(tokenizerConfig.model_max_length) ?? Infinity);
		const session = await createSession(ort, modelFile, spec);
		const output = ['last_hidden_state', 'token_embeddings'].find((name) => session.outputNames.includes(name));
		const missing = ['input_ids', 'attention_mask'].filter((name) => !session.inputNames.includes(name));
		if (!output || missing.length > 0) {
			await session.release();
			throw new TransferLearningError(
				`${modelFile.location} is not a sentence encoder: ${output ? `it has no input ${missing.join(' or ')}` : `its outputs are ${session.outputNames.join(', ')}, not last_hidden_state`}`,
				'Choose an ONNX export of a sentence-transformers model (feature-extraction), such as the Xenova/ repositories',
			);
		}
		const padId = positiveInteger(config.pad_token_id) ?? 0;
		return new HubTextEncoder(spec, dimension, maxTokens, ort, session, tokenizer, closingSpecialTokens(tokenizer), padId, output);
	}

	/** One unit-length vector per text, in order. */
	async embed(texts: string[]): Promise<Float32Array[]> {
		const encoded = texts.map((text) => this.encode(text));
		// Similar lengths batched together pad less; results go back to the callers' order.
		const order = encoded.map((_, i) => i).sort((a, b) => encoded[a].ids.length - encoded[b].ids.length);
		const vectors: Float32Array[] = new Array(texts.length);
		for (let start = 0; start < order.length; start += BATCH_SIZE) {
			const batch = order.slice(start, start + BATCH_SIZE);
			const pooled = await this.run(batch.map((i) => encoded[i]));
			batch.forEach((i, k) => (vectors[i] = pooled[k]));
		}
		return vectors;
	}

	/** Token ids with the special tokens, cut to maxTokens with the closing special tokens kept. */
	encode(text: string): Encoded {
		const encoding = this.tokenizer.encode((this.spec.prefix ?? '') + text, { add_special_tokens: true, return_token_type_ids: true });
		let ids = encoding.ids;
		let typeIds = encoding.token_type_ids;
		if (ids.length > this.maxTokens) {
			const keep = this.maxTokens - this.closingSpecials;
			ids = [...ids.slice(0, keep), ...ids.slice(ids.length - this.closingSpecials)];
			typeIds = [...typeIds.slice(0, keep), ...typeIds.slice(typeIds.length - this.closingSpecials)];
		}
		return { ids, typeIds };
	}

	private async run(batch: Encoded[]): Promise<Float32Array[]> {
		const length = Math.max(...batch.map((e) => e.ids.length));
		const size = batch.length * length;
		const ids = new BigInt64Array(size).fill(BigInt(this.padId));
		const mask = new BigInt64Array(size);
		const types = new BigInt64Array(size);
		batch.forEach((e, b) => {
			e.ids.forEach((id, t) => {
				ids[b * length + t] = BigInt(id);
				mask[b * length + t] = 1n;
				types[b * length + t] = BigInt(e.typeIds[t]);
			});
		});
		const dims = [batch.length, length];
		const feeds: Record<string, Ort.Tensor> = {
			input_ids: new this.ort.Tensor('int64', ids, dims),
			attention_mask: new this.ort.Tensor('int64', mask, dims),
		};
		// XLM-RoBERTa exports have no token types.
		if (this.session.inputNames.includes('token_type_ids')) feeds.token_type_ids = new this.ort.Tensor('int64', types, dims);
		const result = await this.session.run(feeds, [this.output]);
		const states = result[this.output];
		try {
			if (states.dims.length !== 3 || states.dims[2] !== this.dimension) {
				throw new TransferLearningError(`${this.spec.id} returned token states of shape [${states.dims.join(', ')}], not [batch, tokens, ${this.dimension}]`, 'Choose an ONNX export of a sentence-transformers model');
			}
			const data = states.data as Float32Array;
			return batch.map((e, b) => pool(data, b, length, e.ids.length, this.dimension, this.spec.pooling));
		} finally {
			states.dispose();
		}
	}

	dispose(): void {
		this.session.release().catch((error: unknown) => console.warn(`[transfer-learning] could not release an ONNX Runtime session: ${errorMessage(error)}`));
	}
}

/**
 * Sentence-transformers pooling of one sequence's states, then L2 normalisation. Padding sits after
 * the `tokens` real ones, so the attention mask's ones are exactly the first `tokens` positions.
 */
export function pool(data: Float32Array, row: number, length: number, tokens: number, dimension: number, pooling: 'mean' | 'cls'): Float32Array {
	const vector = new Float32Array(dimension);
	const base = row * length * dimension;
	const count = pooling === 'cls' ? 1 : tokens;
	for (let t = 0; t < count; t++) for (let d = 0; d < dimension; d++) vector[d] += data[base + t * dimension + d];
	let norm = 0;
	for (let d = 0; d < dimension; d++) {
		vector[d] /= count;
		norm += vector[d] * vector[d];
	}
	// torch's normalize: the norm is floored at 1e-12, so an all-zero vector stays zero rather than NaN.
	const scale = 1 / Math.max(Math.sqrt(norm), 1e-12);
	for (let d = 0; d < dimension; d++) vector[d] *= scale;
	return vector;
}

async function createSession(ort: typeof Ort, file: HubFile, spec: HubTextSpec): Promise<Ort.InferenceSession> {
	try {
		return await ort.InferenceSession.create(file.bytes, {
			executionProviders: ['cpu'],
			intraOpNumThreads: settings().onnxThreads,
			graphOptimizationLevel: 'all',
			extra: { session: { intra_op: { allow_spinning: '0' } } },
		});
	} catch (error) {
		// A damaged download would fail the same way forever; removing it lets the next load fetch it again.
		if (file.cachePath) await fs.rm(file.cachePath, { force: true });
		throw new TransferLearningError(
			`${file.location} is not an ONNX model ONNX Runtime can load (corrupt or truncated download?): ${errorMessage(error).split('\n')[0].slice(0, 300)}`,
			`Load ${spec.id} again to download it afresh, or replace the file on the mirror`,
		);
	}
}
