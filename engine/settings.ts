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
	/** TL_MODEL_STORE: where trained models are kept, a folder or a PostgreSQL database. */
	modelStore: ModelStoreLocation;
	/** The folder store's folder: TL_MODEL_STORE when that is a path, else `<n8n user folder>/transfer-learning/models`. */
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

export type ModelStoreLocation = { kind: 'folder'; dir: string } | { kind: 'postgres'; connection: PostgresConnection };

/** What `pg` needs to connect, from a URL or from n8n's DB_POSTGRESDB_* settings. */
export interface PostgresConnection {
	connectionString?: string;
	host?: string;
	port?: number;
	database?: string;
	user?: string;
	password?: string;
	ssl?: boolean | { ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean };
	/** `postgres://user@host:port/database`, never the password: for messages and the log. */
	label: string;
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

/**
 * TL_MODEL_STORE's value: a `postgres://` (or `postgresql://`) URL, `n8n-database` for the
 * database n8n itself uses (DB_TYPE=postgresdb and DB_POSTGRESDB_*, read as n8n reads them), or
 * a folder.
 */
export function modelStoreLocation(value: string): ModelStoreLocation {
	if (/^postgres(ql)?:\/\//i.test(value)) {
		let url: URL;
		try {
			url = new URL(value);
		} catch {
			throw new Error('TL_MODEL_STORE is not a valid PostgreSQL URL: write it as postgres://user:password@host:5432/database');
		}
		const label = `postgres://${url.username ? `${decodeURIComponent(url.username)}@` : ''}${url.host}${url.pathname}`;
		return { kind: 'postgres', connection: { connectionString: value, label } };
	}
	if (value === 'n8n-database') {
		const dbType = n8nEnv('DB_TYPE') ?? 'sqlite';
		if (dbType !== 'postgresdb') {
			throw new Error(`TL_MODEL_STORE=n8n-database needs n8n to use PostgreSQL (DB_TYPE=postgresdb), but DB_TYPE is ${dbType}: set TL_MODEL_STORE to a postgres:// URL or a folder instead`);
		}
		const host = n8nEnv('DB_POSTGRESDB_HOST') || 'localhost';
		const port = Number(n8nEnv('DB_POSTGRESDB_PORT') || 5432);
		const database = n8nEnv('DB_POSTGRESDB_DATABASE') || 'n8n';
		const user = n8nEnv('DB_POSTGRESDB_USER') || 'postgres';
		// As n8n builds its TypeORM options: any certificate setting turns SSL on, with the values as given.
		const [ca, cert, key] = ['CA', 'CERT', 'KEY'].map((name) => n8nEnv(`DB_POSTGRESDB_SSL_${name}`) || undefined);
		const rejectUnauthorized = n8nEnv('DB_POSTGRESDB_SSL_REJECT_UNAUTHORIZED') !== 'false';
		const ssl = ca || cert || key || !rejectUnauthorized ? { ca, cert, key, rejectUnauthorized } : n8nEnv('DB_POSTGRESDB_SSL_ENABLED') === 'true';
		return {
			kind: 'postgres',
			connection: { host, port, database, user, password: n8nEnv('DB_POSTGRESDB_PASSWORD') ?? '', ssl, label: `postgres://${user}@${host}:${port}/${database}` },
		};
	}
	return { kind: 'folder', dir: path.resolve(value) };
}

export function settings(): Settings {
	const base = path.join(n8nUserFolder(), 'transfer-learning');
	const backend = (process.env.TL_BACKEND ?? 'auto') as BackendChoice;
	if (!['auto', 'onnxruntime', 'tensorflow', 'wasm', 'cpu'].includes(backend)) {
		throw new Error(`TL_BACKEND must be auto, onnxruntime, tensorflow, wasm or cpu, got "${backend}"`);
	}
	const precision = (process.env.TL_PRECISION || 'auto') as PrecisionChoice;
	if (!['auto', 'float32', 'int8'].includes(precision)) throw new Error(`TL_PRECISION must be auto, float32 or int8, got "${precision}"`);
	const modelStore = modelStoreLocation(process.env.TL_MODEL_STORE || path.join(base, 'models'));
	return {
		modelStore,
		modelStoreDir: modelStore.kind === 'folder' ? modelStore.dir : path.join(base, 'models'),
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
