import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type BackendChoice = 'auto' | 'onnxruntime' | 'tensorflow' | 'wasm' | 'cpu';

/** `auto`: int8 where ONNX Runtime runs and the int8 features agree with float32 ones, else float32. */
export type PrecisionChoice = 'auto' | 'float32' | 'int8';

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
	/** TL_PRECISION: the numbers image backbones compute with. */
	precision: PrecisionChoice;
	/** ONNX Runtime's intra-op threads. */
	onnxThreads: number;
	/** Per model file (model.json or one weight shard): size cap and whole-download deadline. */
	maxDownloadBytes: number;
	downloadTimeoutMs: number;
	/** Per image fetched from a URL: size cap (counted while streaming) and whole-download deadline. */
	maxImageBytes: number;
	imageTimeoutMs: number;
	/** n8n's own SSRF settings, read with n8n's meaning (see engine/net/address-policy.ts). */
	ssrf: SsrfSettings;
	/** Decompression-bomb guard: images with more pixels than this are refused before decoding. */
	maxImagePixels: number;
}

export interface SsrfSettings {
	/** N8N_SSRF_PROTECTION_ENABLED: whether n8n checks its own requests (model downloads follow it). */
	enabled: boolean;
	/** N8N_SSRF_BLOCKED_IP_RANGES, "default" expanded to n8n's list. */
	blockedIpRanges: string[];
	allowedIpRanges: string[];
	allowedHostnames: string[];
	blockedHostnames: string[];
}

/** n8n's SSRF_DEFAULT_BLOCKED_IP_RANGES (@n8n/config is not there at run time; a test keeps the two equal). */
export const N8N_DEFAULT_BLOCKED_IP_RANGES: readonly string[] = [
	'10.0.0.0/8',
	'172.16.0.0/12',
	'192.168.0.0/16',
	'127.0.0.0/8',
	'::1/128',
	'169.254.0.0/16',
	'fe80::/10',
	'fc00::/7',
	'fd00::/8',
	'0.0.0.0/8',
	'192.0.0.0/24',
	'192.0.2.0/24',
	'198.18.0.0/15',
	'198.51.100.0/24',
	'203.0.113.0/24',
];

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

/** As @n8n/config reads its variables: NAME, else the file NAME_FILE names; outer quotes dropped. */
function n8nEnv(name: string): string | undefined {
	let value = process.env[name];
	const file = process.env[`${name}_FILE`];
	if (value === undefined && file) value = readFileSync(file, 'utf8');
	return value?.trim().replace(/^(['"])(.*)\1$/, '$2');
}

/** Comma-separated, entries trimmed, empty ones dropped. */
function n8nList(name: string): string[] | undefined {
	return n8nEnv(name)
		?.split(',')
		.map((v) => v.trim())
		.filter(Boolean);
}

function ssrfSettings(): SsrfSettings {
	const blocked = n8nList('N8N_SSRF_BLOCKED_IP_RANGES');
	return {
		enabled: ['true', '1'].includes(n8nEnv('N8N_SSRF_PROTECTION_ENABLED')?.toLowerCase() ?? ''),
		blockedIpRanges: blocked
			? [...new Set(blocked.flatMap((v) => (v.toLowerCase() === 'default' ? N8N_DEFAULT_BLOCKED_IP_RANGES : [v])))]
			: [...N8N_DEFAULT_BLOCKED_IP_RANGES],
		allowedIpRanges: n8nList('N8N_SSRF_ALLOWED_IP_RANGES') ?? [],
		allowedHostnames: n8nList('N8N_SSRF_ALLOWED_HOSTNAMES') ?? [],
		blockedHostnames: n8nList('N8N_SSRF_BLOCKED_HOSTNAMES') ?? [],
	};
}

export function settings(): Settings {
	const base = path.join(n8nUserFolder(), 'transfer-learning');
	const backend = (process.env.TL_BACKEND ?? 'auto') as BackendChoice;
	if (!['auto', 'onnxruntime', 'tensorflow', 'wasm', 'cpu'].includes(backend)) {
		throw new Error(`TL_BACKEND must be auto, onnxruntime, tensorflow, wasm or cpu, got "${backend}"`);
	}
	const precision = (process.env.TL_PRECISION || 'auto') as PrecisionChoice;
	if (!['auto', 'float32', 'int8'].includes(precision)) throw new Error(`TL_PRECISION must be auto, float32 or int8, got "${precision}"`);
	return {
		modelStoreDir: process.env.TL_MODEL_STORE || path.join(base, 'models'),
		modelCacheDir: process.env.TL_MODEL_CACHE || path.join(base, 'cache'),
		mirror: process.env.TL_MODEL_MIRROR || undefined,
		backend,
		precision,
		onnxThreads: positiveNumber('TL_ONNX_THREADS', os.availableParallelism()),
		maxDownloadBytes: positiveNumber('TL_MAX_DOWNLOAD_MB', 512) * 1024 * 1024,
		downloadTimeoutMs: positiveNumber('TL_DOWNLOAD_TIMEOUT_S', 300) * 1000,
		maxImageBytes: positiveNumber('TL_IMAGE_MAX_MB', 20) * 1024 * 1024,
		imageTimeoutMs: positiveNumber('TL_IMAGE_TIMEOUT_S', 30) * 1000,
		ssrf: ssrfSettings(),
		maxImagePixels: positiveNumber('TL_MAX_IMAGE_PIXELS', 50_000_000),
	};
}
