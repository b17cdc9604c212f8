import { DATA_DIR, MIRROR_DIR, TEMP_DIR, sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Logger } from '@n8n/backend-common';
import { Container } from '@n8n/di';
import type { IDataObject, INodeExecutionData } from 'n8n-workflow';
import { Backbone, catalogBackbone, customBackbone, fetchModelArtifacts, ModelStore } from '../engine';
import { imageItem, runNode, type NodeRun } from './helpers/n8n';
import { serveFolder } from './helpers/server';

// n8n reads this when a node first asks for its file rule, after the imports above.
process.env.N8N_RESTRICT_FILE_ACCESS_TO = `${DATA_DIR};${TEMP_DIR}`;
/** Not in N8N_RESTRICT_FILE_ACCESS_TO. */
const OUTSIDE = mkdtempSync(path.join(os.tmpdir(), 'tl-outside-'));
const V1_025_DIR = path.join(MIRROR_DIR, 'tfjs-models', 'tfjs', 'mobilenet_v1_0.25_224');
const V1_025 = path.join(V1_025_DIR, 'model.json');
const BACKBONE = { backbone: 'mobilenet_v1_0.25_224' };
const train = sample('cats_vs_dogs', 6, 'train');
const image = imageItem(sample('cats_vs_dogs', 1, 'test')[0].bytes).binary!;
const labelled = train.map((e) => imageItem(e.bytes, { animal: e.label }));

/** What n8n's logger was told, for checking what webhook callers do not see went to the log. */
const logged: string[] = [];
const logger = Container.get(Logger);
const warn = logger.warn.bind(logger);
logger.warn = (message: string, meta?: Parameters<Logger['warn']>[1]) => {
	logged.push(message);
	warn(message, meta);
};

/** A pipe: reading it waits for a writer that never comes, so a test that reads it never ends. */
function fifo(file: string): string {
	execFileSync('mkfifo', [file]);
	return file;
}

let exported: Promise<Buffer> | undefined;
/** A model file Fine-Tune Head exported (stored as model "real" too), trained once per file. */
function realModelFile(): Promise<Buffer> {
	exported ??= runNode('fineTuneHead', { ...BACKBONE, modelName: 'real', label: '={{ $json.animal }}', options: { outputModelFile: true } }, labelled).then((run) => {
		assert.equal(run.error, undefined, run.error?.message);
		return Buffer.from(run.outputs[0][0].binary!.model.data, 'base64');
	});
	return exported;
}

/** The parts of a model file, and a file put together from parts (as an attacker would). */
function split(file: Buffer): { manifest: IDataObject & { backbone: IDataObject; head: { layers: IDataObject[] } }; weights: Buffer } {
	const length = file.readUInt32LE(8);
	return { manifest: JSON.parse(file.subarray(12, 12 + length).toString('utf8')), weights: file.subarray(12 + length) };
}
function bundle(json: string | Buffer, weights: Buffer): Buffer {
	const text = Buffer.from(json);
	const length = Buffer.alloc(4);
	length.writeUInt32LE(text.length);
	return Buffer.concat([Buffer.from('TLMODEL1'), length, text, weights]);
}
async function crafted(change: (manifest: ReturnType<typeof split>['manifest']) => void): Promise<Buffer> {
	const { manifest, weights } = split(await realModelFile());
	change(manifest);
	// JSON.stringify cannot write a number JSON.parse reads as Infinity; "__INF__" stands for one.
	return bundle(JSON.stringify(manifest).replace('"__INF__"', '1e400'), weights);
}

function classifyFile(file: Buffer, options: { allowFileBackbone?: boolean } = {}): Promise<NodeRun> {
	const item: INodeExecutionData = { json: {}, binary: { ...image, model: { data: file.toString('base64'), mimeType: 'application/octet-stream', fileName: 'model.tlmodel' } } };
	return runNode('classify', { modelSource: 'binary', modelBinaryProperty: 'model', options }, [item]);
}

function assertRefused(run: NodeRun, message: RegExp): void {
	assert.ok(run.error, `refused with ${message}, but it classified: ${JSON.stringify(run.outputs[0]?.[0]?.json.label)}`);
	assert.match(run.error.message, message);
}

function assertClassified(run: NodeRun): void {
	assert.equal(run.error, undefined, run.error?.message);
	assert.ok(['cat', 'dog'].includes(run.outputs[0][0].json.label as string));
}

test('A model file may name only a catalog backbone: another address is refused before any request', async () => {
	assertClassified(await classifyFile(await realModelFile()));
	// Had the model been fetched, this server would have served a working one.
	const canary = await serveFolder(MIRROR_DIR);
	try {
		const foreign = `${canary.url}tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json`;
		const custom = await crafted((m) => Object.assign(m.backbone, { id: `custom:${foreign}`, url: foreign }));
		assertRefused(await classifyFile(custom), /^Item 0: The model file names a custom backbone; model files may only name catalog backbones/);
		const borrowed = await crafted((m) => Object.assign(m.backbone, { url: foreign }));
		assertRefused(await classifyFile(borrowed), /backbone: it names the catalog backbone "mobilenet_v1_0\.25_224" with other settings or another address/);
		assertRefused(await classifyFile(borrowed, { allowFileBackbone: true }), /another address/);
		assert.equal(canary.requests.length, 0, canary.requests.map((r) => r.path).join(', '));
	} finally {
		await canary.close();
	}
	// The option lets a trusted file name its own backbone: here a path n8n may read.
	const allowed = await crafted((m) => Object.assign(m.backbone, { id: `custom:${V1_025}`, url: V1_025 }));
	assertRefused(await classifyFile(allowed), /names a custom backbone/);
	assertClassified(await classifyFile(allowed, { allowFileBackbone: true }));
});

test('A model file naming a path on the server is refused without reading it, even with custom backbones allowed', { timeout: 120_000 }, async () => {
	const pipe = fifo(path.join(OUTSIDE, 'pipe.json'));
	const naming = (file: string) => crafted((m) => Object.assign(m.backbone, { id: `custom:${file}`, url: file }));
	// A read of the pipe would never end, of /dev/zero would fill the memory.
	assertRefused(await classifyFile(await naming(pipe), { allowFileBackbone: true }), /^Item 0: Access to the model file .*pipe\.json is not allowed/);
	for (const file of ['/dev/zero', '/etc/passwd']) {
		assertRefused(await classifyFile(await naming(file)), /names a custom backbone/);
		assertRefused(await classifyFile(await naming(file), { allowFileBackbone: true }), new RegExp(`Access to the model file ${file} is not allowed`));
	}
	// Used alone, without n8n's rule, the engine still reads regular files only.
	await assert.rejects(Backbone.load(customBackbone({ url: pipe })), /pipe\.json is not a regular file/);
	await assert.rejects(Backbone.load(customBackbone({ url: '/dev/zero' })), /\/dev\/zero is not a regular file/);
	assert.throws(() => customBackbone({ url: 'relative/model.json' }), /neither an http\(s\) URL nor an absolute path/);
});

test('A model file whose manifest breaks the schema is refused, naming the field', async () => {
	const cases: [string, (m: ReturnType<typeof split>['manifest']) => void, RegExp][] = [
		// 2048 still loads before the check (slowly); 20000 would allocate gigabytes for the probe image.
		['input size 2048', (m) => Object.assign(m.backbone, { inputSize: { height: 2048, width: 2048 } }), /backbone\.inputSize\.height: Number must be less than or equal to 1024/],
		['input size 20000', (m) => Object.assign(m.backbone, { inputSize: { height: 20000, width: 20000 } }), /backbone\.inputSize\.height: Number must be less than or equal to 1024/],
		['labels that are not strings', (m) => (m.labels = [1, 2]), /labels\[0\]: Expected string, received number/],
		['a label twice', (m) => (m.labels = ['cat', 'cat']), /labels\[1\]: the label "cat" is listed twice/],
		['an empty label', (m) => (m.labels = ['cat', ' ']), /labels\[1\]: the label " " cannot be used: it is empty/],
		['the reserved label', (m) => (m.labels = ['cat', 'unknown']), /labels\[1\]: the label "unknown" cannot be used: "unknown" is reserved/],
		['a label with a comma', (m) => (m.labels = ['cat', 'dog,puppy']), /labels\[1\]: the label "dog,puppy" cannot be used: it holds a comma/],
		['a feature size the head does not have', (m) => (m.featureSize = 999), /head\.mean: should be 999 values from 0, not 256 from 0/],
		['a feature size of 1e400 (Infinity)', (m) => (m.featureSize = '__INF__'), /featureSize: /],
		['a name that is a path', (m) => (m.name = '../x'), /name: not a valid model name/],
		['an unknown normalisation', (m) => (m.backbone.normalization = 'constructor'), /backbone\.normalization: Invalid enum value/],
		['an unknown resize mode', (m) => (m.resizeMode = 'toString'), /resizeMode: Invalid enum value/],
		['a last layer without softmax', (m) => (m.head.layers[0].activation = 'relu'), /head\.layers\[0\]\.activation: should be softmax/],
		['a format version that is not whole', (m) => (m.formatVersion = 0.5), /formatVersion: /],
	];
	for (const [what, change, message] of cases) {
		const file = await crafted(change);
		const run = await classifyFile(file);
		assert.ok(run.error, `${what}: classified`);
		assert.match(run.error.message, /^Item 0: The model file is damaged: /, what);
		assert.match(run.error.message, message, what);
	}
});

test('A model file with 100,000 labels is refused; so is a manifest of 100 MB, unparsed', async () => {
	const { manifest, weights } = split(await realModelFile());
	// Consistent otherwise: one hidden unit, then 100,000 outputs, so only the count is wrong.
	const labels = Array.from({ length: 100_000 }, (_, i) => `class${i}`);
	const featureSize = manifest.featureSize as number;
	const values = [featureSize, featureSize, featureSize, 1, 100_000, 100_000];
	let at = 0;
	const spans = values.map((n) => {
		at += n;
		return [at - n, n];
	});
	const many = {
		...manifest,
		labels,
		head: { mean: spans[0], std: spans[1], layers: [{ units: 1, activation: 'relu', kernel: spans[2], bias: spans[3] }, { units: 100_000, activation: 'softmax', kernel: spans[4], bias: spans[5] }] },
	};
	const head = new Float32Array(at);
	head.set(new Float32Array(weights.buffer.slice(weights.byteOffset, weights.byteOffset + featureSize * 8)));
	const run = await classifyFile(bundle(JSON.stringify(many), Buffer.from(head.buffer)));
	assertRefused(run, /labels: Array must contain at most 1000 element\(s\)/);

	// Valid JSON all the same: the manifest padded with spaces to 100 MB.
	const text = JSON.stringify(manifest);
	const padded = Buffer.alloc(100 * 1024 * 1024, 0x20);
	padded.write(text);
	assertRefused(await classifyFile(bundle(padded, weights)), /^Item 0: The model file is damaged: its manifest is 104857600 bytes, more than 16777216/);
});

test('Weight files named in a model.json stay in its folder or URL prefix: a climbing, absolute or foreign name is refused before it is read', async () => {
	// Local: the secret is a regular file beside the model's folder; read as weights, its size would show in the error.
	const root = path.join(TEMP_DIR, 'climb');
	cpSync(V1_025_DIR, path.join(root, 'model'), { recursive: true });
	writeFileSync(path.join(root, 'secret.txt'), 'password=hunter2\n');
	const modelJson = JSON.parse(readFileSync(V1_025, 'utf8'));
	const withPath = (name: string) => ({ ...modelJson, weightsManifest: [{ ...modelJson.weightsManifest[0], paths: [name] }, ...modelJson.weightsManifest.slice(1)] });
	const local = path.join(root, 'model', 'model.json');
	for (const name of ['../secret.txt', `${root}/secret.txt`, '..\\secret.txt', '%2e%2e/secret.txt', 'sub/../../secret.txt']) {
		writeFileSync(local, JSON.stringify(withPath(name)));
		await assert.rejects(fetchModelArtifacts(local), (e: Error) => {
			assert.match(e.message, /names the weight file .*, which (leaves its folder|is absolute or names a host|holds a backslash or NUL)$/, name);
			return true;
		});
	}

	// Over http: only the model.json is requested, never a file above it or on another host.
	const site = path.join(TEMP_DIR, 'site');
	mkdirSync(path.join(site, 'm'), { recursive: true });
	writeFileSync(path.join(site, 'secret.bin'), 'secret');
	const canary = await serveFolder(OUTSIDE);
	const host = await serveFolder(site);
	try {
		for (const name of ['../secret.bin', '%2e%2e/secret.bin', '..%2fsecret.bin', '/secret.bin', `${canary.url}secret.bin`, `//${new URL(canary.url).host}/secret.bin`, 'file:///etc/passwd']) {
			writeFileSync(path.join(site, 'm', 'model.json'), JSON.stringify(withPath(name)));
			host.requests.length = 0;
			await assert.rejects(fetchModelArtifacts(`${host.url}m/model.json?${encodeURIComponent(name)}`), /names the weight file/, name);
			assert.deepEqual(host.requests.map((r) => r.path), ['/m/model.json'], name);
		}
		assert.equal(canary.requests.length, 0);
	} finally {
		await canary.close();
		await host.close();
	}
});

test("A custom model given by path follows n8n's file rule: outside N8N_RESTRICT_FILE_ACCESS_TO, in n8n's folder or through a link out, it is refused", async () => {
	const copy = (folder: string) => {
		cpSync(V1_025_DIR, folder, { recursive: true });
		return path.join(folder, 'model.json');
	};
	const extract = (url: string) => runNode('extractFeatures', { backbone: 'custom', customModelUrl: url, customFeatureLayer: 'conv_pw_13_relu' }, [{ json: {}, binary: image }]);
	const inside = copy(path.join(TEMP_DIR, 'files', 'v1'));
	const ok = await extract(inside);
	assert.equal(ok.error, undefined, ok.error?.message);
	assert.equal((ok.outputs[0][0].json.features as number[]).length, 256);

	const outside = copy(path.join(OUTSIDE, 'v1'));
	const inN8nFolder = copy(path.join(TEMP_DIR, '.n8n', 'v1'));
	symlinkSync(path.join(OUTSIDE, 'v1'), path.join(TEMP_DIR, 'files', 'link'));
	for (const url of [outside, inN8nFolder, path.join(TEMP_DIR, 'files', 'link', 'model.json')]) {
		const run = await extract(url);
		assertRefused(run, /^Access to the model file .* is not allowed/);
		assert.match(run.error!.description ?? '', /N8N_RESTRICT_FILE_ACCESS_TO/);
	}

	// model.json inside the allowed folder, its weight file a link to one outside it.
	const linkedWeights = copy(path.join(TEMP_DIR, 'files', 'linked-weights'));
	const shard = (JSON.parse(readFileSync(linkedWeights, 'utf8')).weightsManifest[0].paths as string[])[0];
	rmSync(path.join(path.dirname(linkedWeights), shard));
	symlinkSync(path.join(OUTSIDE, 'v1', shard), path.join(path.dirname(linkedWeights), shard));
	const run = await extract(linkedWeights);
	assertRefused(run, new RegExp(`^Access to the model file .*${shard} is not allowed`));
});

test("A catalog backbone read from a TL_MODEL_MIRROR folder loads whatever n8n's file rule says: the mirror is the administrator's", async () => {
	const refuseEverything = async () => false;
	const backbone = await Backbone.load(catalogBackbone('mobilenet_v1_0.25_224'), { fileAccess: refuseEverything });
	try {
		assert.equal(backbone.featureSize, 256);
	} finally {
		backbone.retire();
	}
});

test('A stored model whose folder was tampered with is refused; one trained here on a custom backbone loads', async () => {
	await realModelFile();
	const store = new ModelStore();
	const version = (name: string) => path.join(store.root, name, '1');
	const tamper = async (name: string, change: (manifest: IDataObject & { backbone: IDataObject }) => void) => {
		cpSync(version('real'), version(name), { recursive: true });
		const file = path.join(version(name), 'manifest.json');
		const manifest = JSON.parse(await fs.readFile(file, 'utf8'));
		change(manifest);
		await fs.writeFile(file, JSON.stringify(manifest));
	};
	const classifyStored = (modelName: string) => runNode('classify', { modelName }, [{ json: {}, binary: image }]);

	await tamper('big', (m) => Object.assign(m, { name: 'big', backbone: { ...m.backbone, inputSize: { height: 2048, width: 2048 } } }));
	assertRefused(await classifyStored('big'), /^Item 0: Model "big" version 1 is damaged: backbone\.inputSize\.height: Number must be less than or equal to 1024/);
	await tamper('elsewhere', (m) => Object.assign(m, { name: 'elsewhere', backbone: { ...m.backbone, url: 'http://127.0.0.1:9/model.json' } }));
	assertRefused(await classifyStored('elsewhere'), /damaged: backbone: it names the catalog backbone "mobilenet_v1_0\.25_224" with other settings or another address/);
	// A whole folder copied under another name.
	await tamper('copied', () => {});
	assertRefused(await classifyStored('copied'), /^Item 0: Model "copied" version 1 is damaged: its manifest is that of model "real" version 1/);
	// Weights longer than the manifest says are not read.
	await tamper('padded', (m) => (m.name = 'padded'));
	await fs.appendFile(path.join(version('padded'), 'head.bin'), Buffer.alloc(4096));
	assertRefused(await classifyStored('padded'), /damaged: head\.bin is \d+ bytes, the manifest needs \d+/);

	const custom = await runNode('fineTuneHead', { backbone: 'custom', customModelUrl: V1_025, modelName: 'custom', label: '={{ $json.animal }}' }, labelled);
	assert.equal(custom.error, undefined, custom.error?.message);
	assertClassified(await classifyStored('custom'));
});

test('Errors that reach webhook callers name no server folder and no other model; the log has both', async () => {
	await realModelFile();
	logged.length = 0;
	const missing = await runNode('classify', { modelName: 'nope' }, [{ json: {}, binary: image }]);
	assert.equal(missing.error?.message, 'Item 0: There is no model named "nope"');
	assert.equal(missing.error?.description, "Check the model name: the models this n8n has are listed in the Classify node's Model list, and Fine-Tune Head adds them");
	const store = new ModelStore().root;
	assert.ok(logged.some((line) => line.includes(store) && /\breal\b/.test(line)), logged.join('\n'));

	// A path under n8n's user folder is shown relative to it.
	logged.length = 0;
	const gone = path.join(TEMP_DIR, 'files', 'gone', 'model.json');
	const run = await runNode('extractFeatures', { backbone: 'custom', customModelUrl: gone }, [{ json: {}, binary: image }], { continueOnFail: true });
	const error = run.outputs[0][0].json.error as string;
	assert.equal(error, 'Could not read model file <n8n user folder>/files/gone/model.json: ENOENT');
	assert.ok(logged.some((line) => line.includes(gone)), logged.join('\n'));
});
