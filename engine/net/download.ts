import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { TransferLearningError, errorMessage } from '../errors';
import { sharePromise } from '../memo';
import { guardedFetch } from './guarded-fetch';
import { checkLocalModelFile, checkWeightPaths, type LocalFileAccess } from '../inputs/paths';
import { PUBLIC_MODEL_HOST, settings } from '../settings';

/** Sent with requests to the host of the configured model URL, for private hosts. */
export interface HostAuth {
	headerName: string;
	headerValue: string;
}

/**
 * Tells credentials apart without holding them: part of every cache key of a model fetched with
 * one, so that a model a credential unlocked is never served to a caller without it.
 */
export function credentialKey(auth?: HostAuth): string {
	return auth ? crypto.createHash('sha256').update(`${auth.headerName.toLowerCase()}\n${auth.headerValue}`).digest('hex').slice(0, 32) : '';
}

interface WeightsManifestGroup {
	paths: string[];
	weights: WeightSpec[];
}

interface WeightSpec {
	name: string;
	shape: number[];
	dtype: string;
	quantization?: { dtype: string };
}

export interface ModelArtifacts {
	modelJson: { format?: string; modelTopology?: unknown; weightsManifest: WeightsManifestGroup[] };
	weightSpecs: WeightSpec[];
	weightData: ArrayBuffer;
	/** Where the files were read from after the mirror was applied, for error messages. */
	location: string;
}

/** The mirror replaces the public host for every catalog download; air-gapped installs rely on it. */
export function applyMirror(url: string, mirror = settings().mirror): string {
	if (!mirror || !url.startsWith(PUBLIC_MODEL_HOST)) return url;
	const rest = url.slice(PUBLIC_MODEL_HOST.length);
	if (/^https?:\/\//i.test(mirror)) return mirror.replace(/\/*$/, '/') + rest;
	const folder = mirror.startsWith('file:') ? fileURLToPath(mirror) : path.resolve(mirror);
	return path.join(folder, ...rest.split('/'));
}

const isHttp = (location: string) => /^https?:\/\//i.test(location);

const inflight = new Map<string, Promise<ModelArtifacts>>();

/**
 * Reads a tfjs model.json and its weight files from a URL (through the cache) or a local path.
 * Concurrent calls for the same model share one download.
 */
export function fetchModelArtifacts(url: string, auth?: HostAuth, fileAccess?: LocalFileAccess): Promise<ModelArtifacts> {
	const location = applyMirror(url);
	const key = `${location}#${credentialKey(auth)}`;
	// Shared while in flight only: the cache on disk serves later loads.
	// The file access rule is for paths a workflow names; a mirror folder is the administrator's.
	const access = location === url ? fileAccess : undefined;
	return sharePromise(inflight, key, () =>
		(isHttp(location) ? fetchThroughCache(location, auth) : readLocal(location, access)).finally(() => inflight.delete(key)),
	);
}

async function readLocal(location: string, fileAccess: LocalFileAccess | undefined): Promise<ModelArtifacts> {
	const file = location.startsWith('file:') ? fileURLToPath(location) : location;
	const read = async (p: string) => {
		try {
			return await fs.readFile(p);
		} catch (error) {
			throw new TransferLearningError(
				`Could not read model file ${p}: ${(error as NodeJS.ErrnoException).code ?? errorMessage(error)}`,
				'Check the model path, or the TL_MODEL_MIRROR folder',
			);
		}
	};
	const modelJson = parseModelJson(await read(file), file);
	const dir = path.dirname(file);
	// Weight files get the checks model.json got: a symlink to a pipe or out of the allowed folders is refused.
	const shards = await Promise.all(
		shardPaths(modelJson).map(async (p) => {
			const shard = path.join(dir, p);
			await checkLocalModelFile(shard, fileAccess, settings().maxDownloadBytes);
			return read(shard);
		}),
	);
	return assemble(modelJson, shards, pathToFileURL(file).href);
}

/** Where a file downloaded from `location` (with `auth`, if any) is kept in the model cache. */
export function cachePathFor(location: string, auth?: HostAuth): string {
	const url = new URL(location);
	// Readable where possible, but never a path that could leave the cache folder.
	const segments = [url.host, ...url.pathname.split('/')].filter((s) => s && s !== '.' && s !== '..');
	const safe = segments.map((s) => s.replace(/[^A-Za-z0-9._-]/g, '_'));
	if (url.search) safe[safe.length - 1] += '_' + crypto.createHash('sha1').update(url.search).digest('hex').slice(0, 8);
	// Models fetched with a credential live apart, one folder per credential.
	const owner = auth ? [`credential-${credentialKey(auth)}`] : [];
	return path.join(settings().modelCacheDir, ...owner, ...safe);
}

async function fetchThroughCache(location: string, auth?: HostAuth): Promise<ModelArtifacts> {
	const cachedJson = cachePathFor(location, auth);
	// model.json is renamed into place last, so its presence means every shard is complete.
	const cached = await fs.readFile(cachedJson).catch(() => undefined);
	// Shards are written and read under the cache path of their URL, never their raw name: a name
	// like "group 1.bin" is escaped in the URL.
	const shardUrls = (modelJson: ModelArtifacts['modelJson']) => shardPaths(modelJson).map((p) => new URL(p, location).href);
	if (cached) {
		try {
			const modelJson = parseModelJson(cached, cachedJson);
			const shards = await Promise.all(shardUrls(modelJson).map((u) => fs.readFile(cachePathFor(u, auth))));
			return assemble(modelJson, shards, location);
		} catch {
			await fs.rm(cachedJson, { force: true }); // damaged cache: fetch again
		}
	}
	// The credential goes to the host (and port) of the model URL only: a weight file named by an
	// absolute URL elsewhere, or a redirect elsewhere, gets none.
	const credential = auth && { origin: new URL(location).origin, headers: { [auth.headerName]: auth.headerValue } };
	const download = (u: string) => guardedFetch(u, { purpose: 'model', credential });
	const jsonBytes = await download(location);
	const modelJson = parseModelJson(jsonBytes, location);
	const urls = shardUrls(modelJson);
	const shards = await Promise.all(urls.map(download));
	const artifacts = assemble(modelJson, shards, location);
	await Promise.all(urls.map((u, i) => writeAtomically(cachePathFor(u, auth), shards[i])));
	await writeAtomically(cachedJson, jsonBytes);
	return artifacts;
}

/**
 * Fetches an image named by item data for Extract Features, Fine-Tune Head or Classify: private
 * and local addresses refused, within the image size and time limits, and refused before the
 * download ends when it is not an image.
 */
/**
 * One model file that is not a tfjs model.json (a tokenizer, an ONNX model), within the model
 * download limits; the credential goes to that file's origin only.
 */
export function downloadModelFile(url: string, auth?: HostAuth): Promise<Buffer> {
	const credential = auth && { origin: new URL(url).origin, headers: { [auth.headerName]: auth.headerValue } };
	return guardedFetch(url, { purpose: 'model', credential });
}

export function downloadImage(url: string): Promise<Buffer> {
	return guardedFetch(url, { purpose: 'image', inspect: checkImage });
}

/** Types that image servers send; a missing or generic one leaves the decision to the bytes. */
const IMAGE_CONTENT_TYPE = /^(image\/|application\/octet-stream|binary\/octet-stream)/i;

const HEIF_BRANDS = new Set(['avif', 'avis', 'heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1']);

/** The formats the decoder is meant for, by their signature; anything else never reaches it. */
function imageFormat(head: Buffer): string | undefined {
	const ascii = (start: number, end: number) => head.subarray(start, end).toString('latin1');
	if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return 'jpeg';
	if (head.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'png';
	if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') return 'gif';
	if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
	if (ascii(4, 8) === 'ftyp' && HEIF_BRANDS.has(ascii(8, 12))) return 'heif';
	if (ascii(0, 4) === 'II*\0' || ascii(0, 4) === 'MM\0*') return 'tiff';
	return undefined;
}

function checkImage(contentType: string | undefined, head: Buffer): void {
	const hint = 'Point the URL at a JPEG, PNG, GIF, WebP, AVIF/HEIF or TIFF file';
	if (contentType && !IMAGE_CONTENT_TYPE.test(contentType.trim())) {
		throw new TransferLearningError(`The image URL did not return an image (its server sent ${contentType.split(';')[0].trim()})`, hint);
	}
	if (!imageFormat(head)) {
		throw new TransferLearningError('The image URL did not return an image (its content is not a JPEG, PNG, GIF, WebP, AVIF/HEIF or TIFF file)', hint);
	}
}

/** Temp file then rename: a reader sees the old file, or the whole new one, never half of one. */
export async function writeAtomically(file: string, data: Buffer | string): Promise<void> {
	await fs.mkdir(path.dirname(file), { recursive: true });
	const temp = `${file}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`;
	try {
		await fs.writeFile(temp, data);
		await fs.rename(temp, file);
	} catch (error) {
		await fs.rm(temp, { force: true });
		throw error;
	}
}

function parseModelJson(bytes: Buffer, where: string): ModelArtifacts['modelJson'] {
	let json: ModelArtifacts['modelJson'];
	try {
		json = JSON.parse(bytes.toString('utf8'));
	} catch {
		throw new TransferLearningError(`${where} is not valid JSON (corrupt or truncated download)`, 'Point at a tfjs model.json');
	}
	if (!json || !Array.isArray(json.weightsManifest)) {
		throw new TransferLearningError(`${where} has no weightsManifest: it is not a TensorFlow.js model.json`, 'Point at a tfjs model.json');
	}
	if (!json.modelTopology) {
		throw new TransferLearningError(`${where} has no modelTopology (weights only)`, 'Point at a complete tfjs model.json');
	}
	checkWeightPaths(json.weightsManifest, where);
	return json;
}

function shardPaths(modelJson: ModelArtifacts['modelJson']): string[] {
	return modelJson.weightsManifest.flatMap((group) => group.paths);
}

const BYTES_PER_ELEMENT: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

function expectedBytes(spec: WeightSpec): number | undefined {
	const perElement = BYTES_PER_ELEMENT[spec.quantization?.dtype ?? spec.dtype];
	return perElement === undefined ? undefined : spec.shape.reduce((a, b) => a * b, 1) * perElement;
}

function assemble(modelJson: ModelArtifacts['modelJson'], shards: Buffer[], location: string): ModelArtifacts {
	const weightSpecs = modelJson.weightsManifest.flatMap((group) => group.weights);
	const total = shards.reduce((n, s) => n + s.length, 0);
	const sizes = weightSpecs.map(expectedBytes);
	if (sizes.every((s) => s !== undefined)) {
		const expected = (sizes as number[]).reduce((a, b) => a + b, 0);
		if (expected !== total) {
			throw new TransferLearningError(
				`The weight files of ${location} hold ${total} bytes but the model needs ${expected} (truncated or corrupt download)`,
				'Download the model again, or check the files on the mirror',
			);
		}
	}
	const weightData = new ArrayBuffer(total);
	const view = new Uint8Array(weightData);
	let offset = 0;
	for (const shard of shards) {
		view.set(shard, offset);
		offset += shard.length;
	}
	const artifacts = { modelJson, weightSpecs, weightData, location };
	checkWeightsAreFinite(artifacts);
	return artifacts;
}

/** Random bytes in a weight file decode to NaN or Inf somewhere; catching that here names the cause. */
function checkWeightsAreFinite(artifacts: ModelArtifacts): void {
	let offset = 0;
	for (const spec of artifacts.weightSpecs) {
		const count = spec.shape.reduce((a, b) => a * b, 1);
		if (spec.dtype === 'float32' && !spec.quantization) {
			// Quantised weights before this one can leave the offset unaligned for a view.
			const values = offset % 4 === 0 ? new Float32Array(artifacts.weightData, offset, count) : new Float32Array(artifacts.weightData.slice(offset, offset + count * 4));
			for (let i = 0; i < count; i++) {
				if (!Number.isFinite(values[i])) {
					throw new TransferLearningError(
						`Weight "${spec.name}" of ${artifacts.location} holds ${values[i]} (corrupt weight file)`,
						'Download the model again, or replace the damaged files on the mirror',
					);
				}
			}
		}
		offset += count * (BYTES_PER_ELEMENT[spec.quantization?.dtype ?? spec.dtype] ?? 4);
	}
}

