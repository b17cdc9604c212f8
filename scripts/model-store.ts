/**
 * Lists the models of a store, or copies them to another store (from a folder to PostgreSQL when
 * scaling out, say):
 *   npm run model-store -- list <store>
 *   npm run model-store -- copy <from> <to> [model ...]
 * A store is given as TL_MODEL_STORE takes it: a folder, a postgres:// URL, or n8n-database. Every
 * version is copied, oldest first, with its manifest and weights unchanged except its number: a
 * store numbers the versions it saves, so a folder whose versions have gaps (one deleted) gets
 * consecutive numbers in the copy; each copied version's old and new numbers are printed. A model
 * the target already has is refused, never merged.
 */
import { ModelStore, exportModel } from '../engine';

async function list(location: string): Promise<void> {
	const store = new ModelStore(location);
	for (const model of await store.list()) console.log(`${model.name}: versions ${model.versions.join(', ')}`);
}

async function copy(from: string, to: string, names: string[]): Promise<void> {
	const source = new ModelStore(from);
	const target = new ModelStore(to);
	const models = (await source.list()).filter((m) => !names.length || names.includes(m.name));
	const missing = names.filter((n) => !models.some((m) => m.name === n));
	if (missing.length) throw new Error(`${source.root} has no model named ${missing.join(', ')}`);
	for (const { name } of models) {
		const existing = await target.versions(name);
		if (existing.length) throw new Error(`${target.root} already has model "${name}" (versions ${existing.join(', ')}): remove it there or leave it out of the copy`);
	}
	for (const { name, versions } of models) {
		for (const version of versions) {
			const { manifest, head } = await source.load(name, version);
			const { name: _n, version: _v, head: _h, ...rest } = manifest;
			const saved = await target.save(name, { manifest: rest, head });
			// What was copied must come back identical, number aside, before the next is copied.
			const back = await target.load(name, saved.version);
			if (!exportModel({ manifest: { ...back.manifest, version }, head: back.head }).equals(exportModel({ manifest, head }))) {
				throw new Error(`model "${name}" version ${version} did not read back identical from ${target.root}`);
			}
			console.log(`${name} ${version} -> ${target.root} ${name} ${saved.version}`);
		}
	}
}

async function main(): Promise<void> {
	const [command, ...args] = process.argv.slice(2);
	if (command === 'list' && args.length === 1) return list(args[0]);
	if (command === 'copy' && args.length >= 2) return copy(args[0], args[1], args.slice(2));
	throw new Error('usage: model-store list <store> | model-store copy <from> <to> [model ...]   (a store: a folder, a postgres:// URL or n8n-database)');
}

main().catch((error) => {
	console.error(error instanceof Error ? error.message : error);
	process.exitCode = 1;
});
