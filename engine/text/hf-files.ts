import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cachePathFor, downloadModelFile, writeAtomically, type HostAuth } from '../net/download';
import { TransferLearningError, errorMessage } from '../errors';
import { settings } from '../settings';

export const HUB_HOST = 'https://huggingface.co/';

/** `owner/name` as the hub spells repository ids: no path tricks, no revision, no spaces. */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$/;

export function hubRepoProblem(repo: string): string | undefined {
	if (!REPO_ID.test(repo) || repo.split('/').some((part) => part.includes('..'))) {
		return 'a Hugging Face model id is "owner/name" (letters, digits, "-", "_" and "."), such as Xenova/all-MiniLM-L6-v2';
	}
	return undefined;
}

/**
 * Where `file` of the hub repository `repo` (main revision) is read from: the hub itself, or
 * `<mirror>/huggingface.co/<repo>/resolve/main/<file>` when TL_MODEL_MIRROR is set (a folder or an
 * http(s) base), the hub's own URL layout so that a mirror is a plain copy of the needed files.
 */
export function hubFileLocation(repo: string, file: string, mirror = settings().mirror): string {
	const rest = `huggingface.co/${repo}/resolve/main/${file}`;
	if (!mirror) return `${HUB_HOST}${rest.slice('huggingface.co/'.length)}`;
	if (/^https?:\/\//i.test(mirror)) return mirror.replace(/\/*$/, '/') + rest;
	const folder = mirror.startsWith('file:') ? fileURLToPath(mirror) : path.resolve(mirror);
	return path.join(folder, ...rest.split('/'));
}

export interface HubFile {
	bytes: Buffer;
	/** Where it was read from, for error messages. */
	location: string;
	/** The cached copy, removed when the bytes turn out to be damaged; undefined for mirror folders. */
	cachePath?: string;
}

/**
 * The files of a hub repository, from a mirror folder as they are, or from the hub (or an http
 * mirror) through the model cache: a file is downloaded once, and a later load makes no request.
 */
export async function fetchHubFiles(repo: string, files: string[], auth?: HostAuth): Promise<HubFile[]> {
	const problem = hubRepoProblem(repo);
	if (problem) throw new TransferLearningError(`"${repo}" is not a Hugging Face model id`, problem);
	// One after another, in the order given: a missing small file fails the load before the large
	// ONNX file is fetched, and no download is left running after a failure.
	const fetched: HubFile[] = [];
	for (const file of files) fetched.push(await fetchHubFile(repo, file, auth));
	return fetched;
}

async function fetchHubFile(repo: string, file: string, auth?: HostAuth): Promise<HubFile> {
	const location = hubFileLocation(repo, file);
	if (!/^https?:\/\//i.test(location)) {
		const bytes = await fs.readFile(location).catch((error: NodeJS.ErrnoException) => {
			throw new TransferLearningError(
				`Could not read ${file} of ${repo} at ${location}: ${error.code ?? errorMessage(error)}`,
				'Copy the file into the TL_MODEL_MIRROR folder as huggingface.co/<owner>/<name>/resolve/main/<file>',
			);
		});
		return { bytes, location };
	}
	const cachePath = cachePathFor(location, auth);
	const cached = await fs.readFile(cachePath).catch(() => undefined);
	if (cached) return { bytes: cached, location, cachePath };
	const bytes = await downloadModelFile(location, auth);
	await writeAtomically(cachePath, bytes);
	return { bytes, location, cachePath };
}

/** Parses a JSON file of a hub repository; a damaged cached copy is removed so the next load fetches it again. */
export async function parseHubJson(file: HubFile): Promise<Record<string, unknown>> {
	try {
		const value: unknown = JSON.parse(file.bytes.toString('utf8'));
		if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
	} catch {
		// Reported below, with the file named.
	}
	if (file.cachePath) await fs.rm(file.cachePath, { force: true });
	throw new TransferLearningError(`${file.location} is not a JSON object (corrupt or truncated download)`, 'Load the model again, or replace the file on the mirror');
}
