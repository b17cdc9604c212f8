import { TransferLearningError } from '../errors';
import { HUB_HOST, hubRepoProblem } from './hf-files';

/**
 * A sentence-transformers model exported to ONNX on the Hugging Face hub (the Xenova/… repositories
 * transformers.js uses): its tokenizer.json, config.json and tokenizer_config.json beside an ONNX
 * file whose output is the token states `last_hidden_state` [batch, tokens, hidden].
 */
export interface HubTextSpec {
	inputType: 'text';
	/** Catalog id, or `hf:<owner>/<name>` (fp32) / `hf:<owner>/<name>:quantized`. */
	id: string;
	/** The hub URL of the ONNX file: https://huggingface.co/<owner>/<name>/resolve/main/onnx/<file>. */
	url: string;
	format: 'hf-onnx';
	/** How token states become one vector, as the model's sentence-transformers pooling config says. */
	pooling: 'mean' | 'cls';
	/** Longer texts are cut to this many tokens (special tokens included); the model's own limit caps it. */
	maxTokens: number;
	/** Put before every text, for models trained with one (E5's "query: "). */
	prefix?: string;
}

/** Long enough for a paragraph; attention costs grow with its square. */
export const DEFAULT_MAX_TOKENS = 256;

const ONNX_FILES = { fp32: 'onnx/model.onnx', quantized: 'onnx/model_quantized.onnx' };

const hubOnnxUrl = (repo: string, quantized: boolean) => `${HUB_HOST}${repo}/resolve/main/${quantized ? ONNX_FILES.quantized : ONNX_FILES.fp32}`;

/** `hf:<owner>/<name>` (fp32 ONNX) or `hf:<owner>/<name>:quantized` (int8): mean pooling, DEFAULT_MAX_TOKENS. */
export function hubTextSpec(id: string): HubTextSpec {
	const match = /^hf:(.+?)(:quantized)?$/.exec(id.trim());
	const problem = hubRepoProblem(match?.[1] ?? '');
	if (!match || problem) {
		throw new TransferLearningError(`"${id.slice(0, 200)}" is not a Hugging Face text model id`, `Write hf:<owner>/<name>, optionally ending in :quantized; ${problem ?? ''}`.replace(/; $/, ''));
	}
	const [, repo, quantized] = match;
	return { inputType: 'text', id: `hf:${repo}${quantized ?? ''}`, url: hubOnnxUrl(repo, Boolean(quantized)), format: 'hf-onnx', pooling: 'mean', maxTokens: DEFAULT_MAX_TOKENS };
}

/**
 * Sentence encoders from the hub, int8-quantized ONNX (a quarter of the fp32 download, and faster on
 * CPU). Pooling, prefix and token limits follow each model card and sentence-transformers config,
 * token limits capped at DEFAULT_MAX_TOKENS.
 */
export const HUB_TEXT_CATALOG: (HubTextSpec & { title: string })[] = [
	{ id: 'all_minilm_l6_v2', repo: 'Xenova/all-MiniLM-L6-v2', title: 'all-MiniLM-L6-v2 (English, 384 features, 23 MB download)', pooling: 'mean' as const, maxTokens: 256 },
	{ id: 'bge_small_en_v1.5', repo: 'Xenova/bge-small-en-v1.5', title: 'BGE small en v1.5 (English, 384 features, 34 MB download)', pooling: 'cls' as const, maxTokens: 256 },
	{
		id: 'paraphrase_multilingual_minilm_l12_v2',
		repo: 'Xenova/paraphrase-multilingual-MiniLM-L12-v2',
		title: 'paraphrase-multilingual-MiniLM-L12-v2 (50+ languages, 384 features, 118 MB download)',
		pooling: 'mean' as const,
		maxTokens: 128,
	},
	{
		id: 'multilingual_e5_small',
		repo: 'Xenova/multilingual-e5-small',
		title: 'multilingual-e5-small (about 100 languages, 384 features, 118 MB download)',
		pooling: 'mean' as const,
		maxTokens: 256,
		// The model card's prefix for classification and other symmetric tasks.
		prefix: 'query: ',
	},
].map(({ repo, ...entry }) => ({ inputType: 'text' as const, url: hubOnnxUrl(repo, true), format: 'hf-onnx' as const, ...entry }));

/**
 * Why a text spec read from a stored model, not a catalog entry, cannot be used, or undefined when
 * it is exactly what its `hf:` id stands for: a manifest cannot pair an id with other settings.
 */
export function hubTextSpecProblem(spec: { id: string; url: string; format: string; pooling?: string; maxTokens?: number; prefix?: string }): string | undefined {
	const id = spec.id.slice(0, 80);
	if (!spec.id.startsWith('hf:')) return `its id "${id}" is neither a text backbone of the catalog nor hf:<owner>/<name>`;
	let expected: HubTextSpec;
	try {
		expected = hubTextSpec(spec.id);
	} catch {
		return `its id "${id}" is not a Hugging Face model id`;
	}
	const same = expected.id === spec.id && (['url', 'format', 'pooling', 'maxTokens', 'prefix'] as const).every((key) => expected[key] === spec[key]);
	return same ? undefined : `it names the Hugging Face model "${id}" with other settings or another address`;
}
