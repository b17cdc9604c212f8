import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TransferLearningError } from '../errors';

/**
 * Whether the host lets workflows read `file`, an absolute path. In n8n the nodes pass n8n's own
 * rule (N8N_RESTRICT_FILE_ACCESS_TO, the n8n folder, N8N_BLOCK_FILE_PATTERNS), as Read Files from
 * Disk follows it; used alone, the engine reads the files its caller names.
 */
export type LocalFileAccess = (file: string) => Promise<boolean>;

export const isHttpUrl = (address: string) => /^https?:\/\//i.test(address);

/**
 * Why a weight file name from a model.json could reach outside the model's own folder or URL
 * prefix, or undefined when it cannot. tfjs writes bare names ("group1-shard1of2.bin"); a name that
 * climbs, starts at a root, or names a scheme or a host is refused, encoded or not, since URL
 * parsing reads "%2e%2e" as ".." and "\" as "/".
 */
function weightPathProblem(name: unknown): string | undefined {
	if (typeof name !== 'string' || !name) return 'is not a file name';
	if (name.length > 1000) return 'is longer than 1000 characters';
	let decoded: string;
	try {
		decoded = decodeURIComponent(name);
	} catch {
		return 'is not a valid (percent-encoded) file name';
	}
	for (const form of [name, decoded]) {
		if (/[\\\0]/.test(form)) return 'holds a backslash or NUL';
		if (form.startsWith('/')) return 'is absolute or names a host';
		if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(form)) return 'names a scheme';
		if (form.split('/').some((segment) => segment === '..' || segment === '.')) return 'leaves its folder';
	}
	return undefined;
}

/** Refuses a model.json whose weight files are not plain names inside its folder or URL prefix. */
export function checkWeightPaths(weightsManifest: unknown, where: string): void {
	const groups = Array.isArray(weightsManifest) ? weightsManifest : [];
	for (const group of groups) {
		const names = (group as { paths?: unknown } | null)?.paths;
		if (!Array.isArray(names)) {
			throw new TransferLearningError(`${where} has a weights group without "paths": it is not a TensorFlow.js model.json`, 'Point at a tfjs model.json');
		}
		for (const name of names) {
			const problem = weightPathProblem(name);
			if (problem) {
				throw new TransferLearningError(
					`${where} names the weight file "${String(name).slice(0, 100)}", which ${problem}`,
					'Weight files must sit beside the model.json, named without folders above it, a host or a scheme; fix the model.json',
				);
			}
		}
	}
}

/**
 * Checks a model.json named by path before anything reads it: allowed by the host, a regular file
 * (not /dev/zero or a pipe, which would never end), and no larger than a download may be.
 */
export async function checkLocalModelFile(address: string, access: LocalFileAccess | undefined, maxBytes: number): Promise<void> {
	const file = address.startsWith('file:') ? fileURLToPath(address) : address;
	if (!path.isAbsolute(file)) {
		throw new TransferLearningError(`The model path "${file}" is not absolute`, 'Give the absolute path of the model.json on the n8n server, or its http(s) URL');
	}
	if (access && !(await access(file))) {
		throw new TransferLearningError(
			`Access to the model file ${file} is not allowed`,
			'Put the model in a folder listed in N8N_RESTRICT_FILE_ACCESS_TO (n8n reads files only there, and never in its own folder), or serve it over http(s)',
		);
	}
	const stat = await fs.stat(file).catch((error: NodeJS.ErrnoException) => {
		throw new TransferLearningError(`Could not read model file ${file}: ${error.code ?? error.message}`, 'Check the model path');
	});
	if (!stat.isFile()) throw new TransferLearningError(`The model path ${file} is not a regular file`, 'Give the path of a model.json');
	if (stat.size > maxBytes) {
		throw new TransferLearningError(`The model file ${file} is ${stat.size} bytes, more than the ${maxBytes} a model may be`, 'Check the path, or raise TL_MAX_DOWNLOAD_MB');
	}
}
