import type { ILoadOptionsFunctions, INodeListSearchItems, INodePropertyOptions } from 'n8n-workflow';
import { errorMessage, ModelStore, redactPaths, type ModelManifest } from '../../engine';
import { settleLimited } from '../shared/items';

/** Manifests read at once while the editor lists models: a store with hundreds still answers. */
const READ_AT_ONCE = 8;

const percent = (value: number) => `${Math.round(value * 1000) / 10}%`;

/** What the model list shows about a version: what it tells apart, how well, and when it was trained. */
export function describeVersion(manifest: ModelManifest): string {
	const labels = manifest.labels.length > 6 ? `${manifest.labels.slice(0, 6).join(', ')} and ${manifest.labels.length - 6} more` : manifest.labels.join(', ');
	return `${manifest.evaluatedOn === 'validation' ? 'validation' : 'training'} accuracy ${percent(manifest.metrics.accuracy)} · ${labels} · ${manifest.createdAt.slice(0, 10)}`;
}

/** The store's models whose name contains `filter`, each with its latest version summarised. */
export async function searchModels(filter = ''): Promise<INodeListSearchItems[]> {
	const store = new ModelStore();
	const wanted = (await store.list()).filter((m) => m.name.toLowerCase().includes(filter.trim().toLowerCase()));
	const read = await settleLimited(wanted, READ_AT_ONCE, (m) => store.load(m.name, m.latestVersion));
	return wanted.map((m, k) => {
		const result = read[k];
		// n8n's list shows only the name, cut to its width: a short summary goes there too.
		const manifest = result.status === 'fulfilled' ? result.value.manifest : undefined;
		const about = manifest
			? `${percent(manifest.metrics.accuracy)} accuracy · ${manifest.labels.length} classes · ${manifest.createdAt.slice(0, 10)}`
			: `cannot be read: ${redactPaths(errorMessage((result as PromiseRejectedResult).reason))}`;
		return { name: `${m.name} — v${m.latestVersion} · ${about}`, value: m.name };
	});
}

/** The model the node's Model field names, or undefined while it is empty or an unresolved expression. */
function chosenModel(ctx: ILoadOptionsFunctions): string | undefined {
	const name = String(ctx.getCurrentNodeParameter('modelName', { extractValue: true }) ?? '').trim();
	return name && !name.startsWith('=') ? ModelStore.checkName(name) : undefined;
}

/** `latest` first, then each stored version, newest first. */
export async function modelVersionOptions(ctx: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	const latest: INodePropertyOptions = { name: 'Latest', value: 'latest', description: 'The newest version, each retrain used at once' };
	const name = chosenModel(ctx);
	if (!name) return [latest];
	const store = new ModelStore();
	const versions = (await store.versions(name)).reverse();
	const read = await settleLimited(versions, READ_AT_ONCE, (v) => store.load(name, v));
	return [
		latest,
		...versions.map((v, k) => {
			const result = read[k];
			return { name: `Version ${v}`, value: String(v), description: result.status === 'fulfilled' ? describeVersion(result.value.manifest) : 'cannot be read' };
		}),
	];
}

/** The classes of the chosen model and version, in the model's order. */
export async function classNameOptions(ctx: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	const name = chosenModel(ctx);
	if (!name) return [];
	const raw = String(ctx.getCurrentNodeParameter('modelVersion') ?? 'latest');
	const version = /^[1-9][0-9]*$/.test(raw) ? Number(raw) : 'latest';
	const { manifest } = await new ModelStore().load(name, version);
	return manifest.labels.map((label) => ({ name: label, value: label }));
}
