import { promises as fs } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CATALOG, inputTypeOf, type BackboneSpec } from './catalog';
import { applyMirror, cachePathFor } from '../net/download';
import { errorMessage, TransferLearningError } from '../errors';

/** A backbone's name without the details in brackets, e.g. "MobileNet v2 1.00". */
export const shortTitle = (title: string) => title.replace(/\s*\(.*$/, '');

const exists = (file: string) =>
	fs.access(file).then(
		() => true,
		() => false,
	);

/** Catalog image backbones whose model.json is at hand: in a mirror folder, or already in the model cache. */
export async function availableImageBackbones(): Promise<string[]> {
	const entries = Object.values(CATALOG).filter((e) => inputTypeOf(e) === 'image');
	const found = await Promise.all(
		entries.map(async (entry) => {
			const location = applyMirror(entry.url);
			if (!/^https?:\/\//i.test(location)) return exists(location.startsWith('file:') ? fileURLToPath(location) : location);
			return exists(cachePathFor(location));
		}),
	);
	return entries.filter((_, k) => found[k]).map((e) => `${shortTitle(e.title)} (${e.id})`);
}

/**
 * A catalog backbone that did not load: the message (which n8n shows uncollapsed, and webhook
 * callers read) names the backbone, keeps what went wrong (the file, after redaction) and lists
 * the backbones this machine has at hand. Other backbones' errors pass unchanged.
 */
export async function backboneLoadError(spec: BackboneSpec, error: unknown): Promise<Error> {
	const entry = Object.hasOwn(CATALOG, spec.id) ? CATALOG[spec.id] : undefined;
	if (!entry || inputTypeOf(entry) !== 'image') return error instanceof Error ? error : new Error(String(error));
	const available = (await availableImageBackbones()).filter((name) => !name.endsWith(`(${spec.id})`));
	const original = error instanceof TransferLearningError ? error : undefined;
	return new TransferLearningError(
		`The backbone ${shortTitle(entry.title)} (${spec.id}) cannot be loaded: ${errorMessage(error)}. ${
			available.length ? `Available here: ${available.join(', ')}` : 'No other catalog backbone is in the mirror or the model cache'
		}`,
		`Choose an available backbone, or put its files in the mirror (TL_MODEL_MIRROR) or let n8n download it once${original?.hint ? `. ${original.hint}` : ''}`,
		original?.logDetail,
	);
}
