import { TEMP_DIR, REPO_ROOT } from './helpers/env';
import { withoutOnnxRuntime } from './helpers/no-onnxruntime';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { hubTextSpec, hubTextSpecProblem, type HubTextSpec } from '../engine/text/hf-catalog';
import { HubTextEncoder } from '../engine/text/hf-encoder';
import { hubFileLocation } from '../engine/text/hf-files';
import { CATALOG, backboneKey, catalogBackbone, inputTypeOf } from '../engine/backbones/catalog';
import { parseFeatureSource } from '../engine/store/model';
import { loadTextEncoder } from '../engine/text/encoder';
import { runNode } from './helpers/n8n';
import { serveFolder, type StaticServer } from './helpers/server';
import { HIDDEN, MAX_POSITIONS, TOKEN_ID, referenceEmbedding, tinyBertWeights, writeTinyBertRepo } from './helpers/tiny-bert';

const HUB = path.join(TEMP_DIR, 'hub-mirror');
const REPO = 'tiny-org/tiny-bert';
const weights = tinyBertWeights();
let server: StaticServer;
/** Paths the server answers with bytes that are not an ONNX model, to stand for a damaged download. */
const corrupt = new Set<string>();

before(async () => {
	writeTinyBertRepo(HUB, REPO, weights);
	server = await serveFolder(HUB, (urlPath, _req, res) => {
		if (!corrupt.has(urlPath)) return false;
		res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(Buffer.from('<html>rate limited</html>'));
		return true;
	});
	process.env.TL_MODEL_MIRROR = server.url;
});
after(() => server.close());

const ids = (...tokens: string[]) => tokens.map((t) => {
	const id = TOKEN_ID.get(t);
	assert.ok(id !== undefined, `${t} is in the test vocabulary`);
	return id;
});
const sentence = (...tokens: string[]) => ids('[CLS]', ...tokens, '[SEP]');

function assertClose(actual: Float32Array, expected: number[], tolerance = 1e-5) {
	assert.equal(actual.length, expected.length);
	const worst = Math.max(...expected.map((x, i) => Math.abs(x - actual[i])));
	assert.ok(worst < tolerance, `largest difference ${worst} (got ${Array.from(actual)}, expected ${expected})`);
}

/** A spec on the tiny repository with a fresh id, so each test's downloads are its own. */
function spec(overrides: Partial<HubTextSpec> = {}): HubTextSpec {
	return { ...hubTextSpec(`hf:${REPO}`), ...overrides };
}

test('a hub model loads through the mirror into the cache, a second load makes no request, and it embeds as the model computes', async () => {
	const before = server.requests.length;
	const first = await HubTextEncoder.load(spec());
	const fetched = server.requests.slice(before).map((r) => r.path).sort();
	assert.deepEqual(fetched, ['config.json', 'onnx/model.onnx', 'tokenizer.json', 'tokenizer_config.json'].map((f) => `/huggingface.co/${REPO}/resolve/main/${f}`));
	const [vector] = await first.embed(['The cat sat on the mat.']);
	first.dispose();
	assert.equal(vector.length, HIDDEN);
	assertClose(vector, referenceEmbedding(weights, sentence('the', 'cat', 'sat', 'on', 'the', 'mat', '.')));

	const again = await HubTextEncoder.load(spec());
	assert.equal(server.requests.length - before, 4, 'the second load read the cache only');
	assert.deepEqual(await again.embed(['The cat sat on the mat.']), [vector]);
	again.dispose();
});

test('a batch of mixed lengths gives each text the vector it gets alone: padding is masked out', async () => {
	const encoder = await HubTextEncoder.load(spec());
	const texts = ['the cat', 'hello world , the dog is here on the mat !', 'a dog sat', ''];
	const batched = await encoder.embed(texts);
	for (const [i, text] of texts.entries()) assert.deepEqual(Array.from(batched[i]), Array.from((await encoder.embed([text]))[0]), text);
	assertClose(batched[0], referenceEmbedding(weights, sentence('the', 'cat')));
	assertClose(batched[3], referenceEmbedding(weights, sentence()));
	// The check can fail: were the pads of "the cat" (padded to the longest text's 13 tokens) read
	// as tokens, by the pooling or the attention, its vector would be this one instead.
	const unmasked = referenceEmbedding(weights, [...sentence('the', 'cat'), ...new Array(9).fill(TOKEN_ID.get('[PAD]'))]);
	assert.ok(Math.max(...unmasked.map((x, i) => Math.abs(x - batched[0][i]))) > 1e-2);
	encoder.dispose();
});

test('long texts are cut to maxTokens with [SEP] kept, and the model position limit caps maxTokens', async () => {
	const short = await HubTextEncoder.load(spec({ maxTokens: 8 }));
	const words = Array.from({ length: 40 }, (_, i) => ['the', 'cat', 'sat', 'on'][i % 4]);
	assert.deepEqual(short.encode(words.join(' ')).ids, sentence('the', 'cat', 'sat', 'on', 'the', 'cat'));
	const [cut] = await short.embed([words.join(' ')]);
	assertClose(cut, referenceEmbedding(weights, sentence('the', 'cat', 'sat', 'on', 'the', 'cat')));
	short.dispose();

	// The tiny model has 64 positions: a text of 200 words must not index past them.
	const capped = await HubTextEncoder.load(spec());
	assert.equal(capped.maxTokens, MAX_POSITIONS);
	const long = Array.from({ length: 200 }, () => 'dog').join(' ');
	assert.equal(capped.encode(long).ids.length, MAX_POSITIONS);
	const [vector] = await capped.embed([long]);
	assertClose(vector, referenceEmbedding(weights, sentence(...new Array(MAX_POSITIONS - 2).fill('dog'))));
	capped.dispose();
});

test('accents, CJK and emoji tokenize: accents stripped as BERT uncased does, CJK per character, unknown symbols as [UNK]', async () => {
	const encoder = await HubTextEncoder.load(spec());
	assert.deepEqual(encoder.encode('Café naïve').ids, sentence('cafe', 'naive'));
	assert.deepEqual(encoder.encode('日本の猫').ids, sentence('日', '本', '[UNK]', '猫'));
	assert.deepEqual(encoder.encode('🐱 cat').ids, sentence('[UNK]', 'cat'));
	const vectors = await encoder.embed(['Café naïve', '日本の猫', '🐱 cat', 'Ünïcödé ümläüts ß']);
	for (const v of vectors) assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5 && v.every(Number.isFinite));
	encoder.dispose();
});

test('a quantized file the repository lacks fails the load naming the file and the status', async () => {
	await assert.rejects(HubTextEncoder.load(hubTextSpec(`hf:${REPO}:quantized`)), (error: Error) => {
		assert.match(error.message, /HTTP 404 .*tiny-org\/tiny-bert\/resolve\/main\/onnx\/model_quantized\.onnx/);
		return true;
	});
});

test('a corrupt ONNX download fails with a clear error and is not kept in the cache', async () => {
	const repo = 'tiny-org/corrupt-bert';
	writeTinyBertRepo(HUB, repo, weights);
	const onnxPath = `/huggingface.co/${repo}/resolve/main/onnx/model.onnx`;
	corrupt.add(onnxPath);
	await assert.rejects(HubTextEncoder.load(hubTextSpec(`hf:${repo}`)), /model\.onnx is not an ONNX model ONNX Runtime can load/);
	corrupt.delete(onnxPath);
	const before = server.requests.length;
	const encoder = await HubTextEncoder.load(hubTextSpec(`hf:${repo}`));
	assert.deepEqual(server.requests.slice(before).map((r) => r.path), [onnxPath], 'only the damaged file was fetched again');
	encoder.dispose();
});

test('a mirror folder is read in place, in the hub layout', async () => {
	process.env.TL_MODEL_MIRROR = HUB;
	try {
		assert.equal(hubFileLocation(REPO, 'onnx/model.onnx'), path.join(HUB, 'huggingface.co', 'tiny-org', 'tiny-bert', 'resolve', 'main', 'onnx', 'model.onnx'));
		const before = server.requests.length;
		const encoder = await HubTextEncoder.load(spec());
		assert.equal(server.requests.length, before);
		assertClose((await encoder.embed(['a dog']))[0], referenceEmbedding(weights, sentence('a', 'dog')));
		encoder.dispose();
		await assert.rejects(HubTextEncoder.load(hubTextSpec('hf:tiny-org/absent')), /Could not read config\.json of tiny-org\/absent .*ENOENT/);
	} finally {
		process.env.TL_MODEL_MIRROR = server.url;
	}
	delete process.env.TL_MODEL_MIRROR;
	try {
		assert.equal(hubFileLocation('Xenova/all-MiniLM-L6-v2', 'tokenizer.json'), 'https://huggingface.co/Xenova/all-MiniLM-L6-v2/resolve/main/tokenizer.json');
	} finally {
		process.env.TL_MODEL_MIRROR = server.url;
	}
});

test('a Model Host credential is sent with each file of a private model', async () => {
	const repo = 'tiny-org/private-bert';
	writeTinyBertRepo(HUB, repo, weights);
	const before = server.requests.length;
	const encoder = await HubTextEncoder.load(hubTextSpec(`hf:${repo}`), { auth: { headerName: 'Authorization', headerValue: 'Bearer hf_test' } });
	encoder.dispose();
	const sent = server.requests.slice(before);
	assert.equal(sent.length, 4);
	for (const request of sent) assert.equal(request.headers.authorization, 'Bearer hf_test', request.path);
});

test('ids that are not owner/name are refused before any request', () => {
	for (const id of ['hf:', 'hf:owner', 'hf:a/b/c', 'hf:../etc', 'hf:a/..', 'hf:a b/c', 'Xenova/all-MiniLM-L6-v2']) {
		assert.throws(() => hubTextSpec(id), /is not a Hugging Face text model id/, id);
	}
	assert.equal(hubTextSpec(' hf:Xenova/bge-small-en-v1.5:quantized ').url, 'https://huggingface.co/Xenova/bge-small-en-v1.5/resolve/main/onnx/model_quantized.onnx');
});

test('where ONNX Runtime does not load (Alpine), the error names USE Lite and nothing is downloaded', async () => {
	const dir = path.join(TEMP_DIR, 'no-ort');
	const preload = withoutOnnxRuntime(dir);
	const script = `const { HubTextEncoder } = require(${JSON.stringify(path.join(REPO_ROOT, 'dist', 'engine', 'text', 'hf-encoder'))});
		const { hubTextSpec } = require(${JSON.stringify(path.join(REPO_ROOT, 'dist', 'engine', 'text', 'hf-catalog'))});
		HubTextEncoder.load(hubTextSpec('hf:${REPO}')).then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ message: e.message, hint: e.hint })));`;
	const before = server.requests.length;
	const { stdout } = await promisify(execFile)(process.execPath, ['--require', preload, '-e', script], { env: { ...process.env, TL_MODEL_CACHE: path.join(dir, 'cache') } });
	const error = JSON.parse(stdout);
	assert.match(error.message, /hf:tiny-org\/tiny-bert needs ONNX Runtime, which does not load on this server: Error relocating/);
	assert.match(error.hint, /universal_sentence_encoder_lite/);
	assert.equal(server.requests.length, before);
	assert.ok(!existsSync(path.join(dir, 'cache')));
});

test('hf: ids and the four hub catalog entries go through catalogBackbone and loadTextEncoder', async () => {
	const spec = catalogBackbone(`hf:${REPO}`, 'text');
	assert.deepEqual(spec, hubTextSpec(`hf:${REPO}`));
	const encoder = await loadTextEncoder(spec);
	assert.equal(encoder.backendName, 'onnxruntime');
	assert.equal(encoder.dimension, HIDDEN);
	assertClose((await encoder.embed(['hello world']))[0], referenceEmbedding(weights, sentence('hello', 'world')));

	const hub = Object.values(CATALOG).filter((e) => inputTypeOf(e) === 'text' && e.format === 'hf-onnx');
	assert.deepEqual(hub.map((e) => e.id).sort(), ['all_minilm_l6_v2', 'bge_small_en_v1.5', 'multilingual_e5_small', 'paraphrase_multilingual_minilm_l12_v2']);
	for (const entry of hub) {
		assert.match(entry.url, /^https:\/\/huggingface\.co\/Xenova\/[^/]+\/resolve\/main\/onnx\/model_quantized\.onnx$/);
		assert.match(entry.title, /384 features/);
	}
	const e5 = catalogBackbone('multilingual_e5_small', 'text');
	assert.ok(e5.format === 'hf-onnx' && e5.prefix === 'query: ');
	assert.ok(backboneKey(e5) !== backboneKey({ ...e5, prefix: undefined }), 'the prefix changes the features, so it is part of the key');
});

test('a prefix is put before every text, as E5 expects "query: "', async () => {
	const encoder = await HubTextEncoder.load(spec({ prefix: 'a ' }));
	assert.deepEqual(encoder.encode('dog').ids, sentence('a', 'dog'));
	assertClose((await encoder.embed(['dog']))[0], referenceEmbedding(weights, sentence('a', 'dog')));
	encoder.dispose();
});

test('a stored model may name an hf: model only with the settings that id stands for', () => {
	const backbone = hubTextSpec(`hf:${REPO}:quantized`);
	assert.deepEqual(parseFeatureSource({ backbone, l2Normalize: true }).backbone, backbone);
	assert.deepEqual(parseFeatureSource({ backbone: catalogBackbone('bge_small_en_v1.5', 'text'), l2Normalize: true }).backbone, catalogBackbone('bge_small_en_v1.5', 'text'));
	const tampered = [
		{ ...backbone, pooling: 'cls' },
		{ ...backbone, url: 'https://evil.example/model.onnx' },
		{ ...backbone, id: 'hf:../x' },
		{ ...backbone, id: 'my-model' },
		{ ...catalogBackbone('multilingual_e5_small', 'text'), prefix: 'passage: ' },
		{ ...backbone, maxTokens: 0 },
		{ ...backbone, pooling: undefined },
	];
	for (const spec of tampered) assert.throws(() => parseFeatureSource({ backbone: spec, l2Normalize: true }), /not what Extract Features writes/, JSON.stringify(spec));
	// What the model file checks say about each (parseFeatureSource keeps its reasons to itself).
	assert.match(hubTextSpecProblem(tampered[0]) ?? '', /names the Hugging Face model "hf:tiny-org\/tiny-bert:quantized" with other settings/);
	assert.match(hubTextSpecProblem(tampered[1]) ?? '', /with other settings or another address/);
	assert.match(hubTextSpecProblem(tampered[2]) ?? '', /is not a Hugging Face model id/);
	assert.match(hubTextSpecProblem(tampered[3]) ?? '', /neither a text backbone of the catalog nor hf:/);
	assert.equal(hubTextSpecProblem(backbone), undefined);
});

test('nodes: Extract Features with Text Backbone "Hugging Face Model" embeds through the hub model; a malformed id fails naming the field', async () => {
	const params = { inputType: 'text', textBackbone: 'huggingFace', huggingFaceModel: ` ${REPO} `, text: '={{ $json.text }}' };
	const run = await runNode('extractFeatures', params, [{ json: { text: 'The cat sat on the mat.' } }, { json: { text: 'hello world' } }]);
	assert.equal(run.error, undefined, run.error?.description ?? run.error?.message);
	const [first, second] = run.outputs[0].map((item) => item.json);
	assert.equal(first.featureLength, HIDDEN);
	assert.equal(first.backbone, `hf:${REPO}`);
	assertClose(Float32Array.from(first.features as number[]), referenceEmbedding(weights, sentence('the', 'cat', 'sat', 'on', 'the', 'mat', '.')));
	assertClose(Float32Array.from(second.features as number[]), referenceEmbedding(weights, sentence('hello', 'world')));

	for (const bad of ['={{ $json.model }}', 'all-MiniLM-L6-v2', 'Xenova/../secrets', 'https://huggingface.co/Xenova/all-MiniLM-L6-v2']) {
		const failed = await runNode('extractFeatures', { ...params, huggingFaceModel: bad }, [{ json: { text: 'hello' } }], { continueOnFail: true });
		const [item] = failed.outputs[0];
		assert.match(String(item.json.error), /Hugging Face Model ID .* is not a model id/, bad);
		assert.equal(item.json.features, undefined);
	}
	const stopped = await runNode('extractFeatures', { ...params, huggingFaceModel: 'not a model' }, [{ json: { text: 'hello' } }]);
	assert.match(stopped.error?.message ?? '', /"not a model" is not a model id/);
	assert.match(stopped.error?.description ?? '', /Set "Hugging Face Model ID" to owner\/name/);
});
