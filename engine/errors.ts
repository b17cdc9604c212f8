import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { settings } from './settings';

/**
 * An error a user can act on: `message` says what went wrong, `hint` says what to do about it.
 * The nodes turn it into a NodeOperationError with the hint as its description. `logDetail` is
 * for n8n's log only: messages reach webhook callers, who must not learn the server's layout.
 */
export class TransferLearningError extends Error {
	constructor(
		message: string,
		readonly hint?: string,
		readonly logDetail?: string,
	) {
		super(message);
		this.name = 'TransferLearningError';
	}
}

export function errorMessage(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
}

/** Folders whose absolute paths say how the server is laid out, longest first, with what to say instead. */
function serverFolders(): [string, string][] {
	const folders: [string, string][] = [];
	try {
		const { modelStoreDir, modelCacheDir, mirror } = settings();
		folders.push([modelStoreDir, '<model store>'], [modelCacheDir, '<model cache>']);
		if (mirror && !/^https?:\/\//i.test(mirror)) folders.push([mirror.startsWith('file:') ? fileURLToPath(mirror) : mirror, '<model mirror>']);
	} catch {
		// A bad setting is reported where it is read; the paths below are still hidden.
	}
	if (process.env.N8N_USER_FOLDER) folders.push([process.env.N8N_USER_FOLDER, '<n8n user folder>']);
	folders.push([os.homedir(), '~']);
	return folders
		.map(([folder, name]): [string, string] => [path.resolve(folder), name])
		.filter(([folder]) => folder !== path.parse(folder).root)
		.sort(([a], [b]) => b.length - a.length);
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `text` with the server folders it names (as paths or file: URLs) replaced by placeholders, so
 * "<model store>/cats/3/head.bin" still says which file without saying where the store is.
 */
export function redactPaths(text: string): string {
	for (const [folder, name] of serverFolders()) {
		for (const form of [pathToFileURL(folder).href, folder]) {
			// Only whole path segments: /home/ann must not eat /home/anna.
			text = text.replace(new RegExp(`${escapeRegExp(form)}(?=$|[/\\\\\\s'"):,;]|\\.(?:$|\\s))`, 'g'), form.startsWith('file:') ? `file://${name}` : name);
		}
	}
	return text;
}
