import * as os from 'node:os';
import * as path from 'node:path';

export type BackendChoice = 'auto' | 'onnxruntime' | 'tensorflow' | 'wasm' | 'cpu';

/**
 * Where models come from and go to, read from the environment at every call so that a change
 * (or a test) takes effect without reloading the package. One place for every knob, like
 * transformers.js's `env`.
 */
export interface Settings {
	/** Trained models: `<store>/<name>/<version>/`. */
	modelStoreDir: string;
	/** Downloaded backbones, keyed by their URL. */
	modelCacheDir: string;
	/** Folder or http(s) base URL that replaces `https://storage.googleapis.com/`. */
	mirror?: string;
	backend: BackendChoice;
	/** ONNX Runtime's intra-op threads. */
	onnxThreads: number;
	maxDownloadBytes: number;
	downloadTimeoutMs: number;
	/** Decompression-bomb guard: images with more pixels than this are refused before decoding. */
	maxImagePixels: number;
}

export const PUBLIC_MODEL_HOST = 'https://storage.googleapis.com/';

function n8nUserFolder(): string {
	return path.join(process.env.N8N_USER_FOLDER ?? os.homedir(), '.n8n');
}

function positiveNumber(name: string, fallback: number): number {
	const raw = process.env[name];
	if (raw === undefined || raw === '') return fallback;
	const value = Number(raw);
	if (!Number.isFinite(value) || value <= 0) {
		throw new Error(`Environment variable ${name} must be a positive number, got "${raw}"`);
	}
	return value;
}

export function settings(): Settings {
	const base = path.join(n8nUserFolder(), 'transfer-learning');
	const backend = (process.env.TL_BACKEND ?? 'auto') as BackendChoice;
	if (!['auto', 'onnxruntime', 'tensorflow', 'wasm', 'cpu'].includes(backend)) {
		throw new Error(`TL_BACKEND must be auto, onnxruntime, tensorflow, wasm or cpu, got "${backend}"`);
	}
	return {
		modelStoreDir: process.env.TL_MODEL_STORE || path.join(base, 'models'),
		modelCacheDir: process.env.TL_MODEL_CACHE || path.join(base, 'cache'),
		mirror: process.env.TL_MODEL_MIRROR || undefined,
		backend,
		onnxThreads: positiveNumber('TL_ONNX_THREADS', os.availableParallelism()),
		maxDownloadBytes: positiveNumber('TL_MAX_DOWNLOAD_MB', 512) * 1024 * 1024,
		downloadTimeoutMs: positiveNumber('TL_DOWNLOAD_TIMEOUT_S', 300) * 1000,
		maxImagePixels: positiveNumber('TL_MAX_IMAGE_PIXELS', 50_000_000),
	};
}
