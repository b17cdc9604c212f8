import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { damagedModel, decodeHead, encodeHead, headBytes, MODEL_LIMITS, MODEL_NAME, parseManifest, type ManifestOrigin, type ModelManifest } from './model';
import type { NewModel, StoreBackend, StoredModelSummary, StoredVersion } from './backend';

const MANIFEST = 'manifest.json';
const WEIGHTS = 'head.bin';

/**
 * Trained models on disk: `<root>/<name>/<version>/{manifest.json,head.bin}`. A version folder is
 * written under a temporary name and renamed into place whole, so readers see complete versions
 * only and a crash mid-save leaves the previous version served.
 */
export class FolderStore implements StoreBackend {
	constructor(readonly location: string) {}

	async versions(name: string): Promise<number[]> {
		const entries = await fs.readdir(path.join(this.location, name)).catch(() => [] as string[]);
		return entries.filter((e) => /^[1-9][0-9]*$/.test(e)).map(Number).sort((a, b) => a - b);
	}

	async list(): Promise<StoredModelSummary[]> {
		const names = await fs.readdir(this.location).catch(() => [] as string[]);
		const models = await Promise.all(
			names.filter((n) => MODEL_NAME.test(n)).map(async (name) => ({ name, versions: await this.versions(name) })),
		);
		return models.filter((m) => m.versions.length).map((m) => ({ ...m, latestVersion: m.versions[m.versions.length - 1] }));
	}

	/**
	 * A version never changes once written, but its folder can be deleted and the number reused by
	 * a new training: the key includes the manifest's inode and modification time, so one stat per
	 * load tells a new version from the one cached.
	 */
	async version(name: string, version: number): Promise<StoredVersion> {
		const dir = path.join(this.location, name, String(version));
		const manifestFile = path.join(dir, MANIFEST);
		const stat = await fs.stat(manifestFile, { bigint: true }).catch(() => undefined);
		return {
			key: stat ? `${dir}\0${stat.ino}\0${stat.mtimeNs}` : dir,
			read: async () => {
				// Whoever can write the store can also crash n8n, but a damaged or edited folder should
				// fail with a message, never a read of gigabytes: sizes are checked before each read.
				const origin: ManifestOrigin = { from: 'store', name, version };
				const manifest = parseManifest(await readBounded(manifestFile, MODEL_LIMITS.manifestBytes, origin), origin);
				const weightsFile = path.join(dir, WEIGHTS);
				const weights = await fs.stat(weightsFile);
				if (!weights.isFile() || weights.size !== headBytes(manifest)) {
					throw damagedModel(origin, `${WEIGHTS} is ${weights.isFile() ? `${weights.size} bytes, the manifest needs ${headBytes(manifest)}` : 'not a file'}`);
				}
				return { manifest, head: decodeHead(manifest, await fs.readFile(weightsFile), origin) };
			},
		};
	}

	async save(name: string, model: NewModel): Promise<ModelManifest> {
		const modelDir = path.join(this.location, name);
		await fs.mkdir(modelDir, { recursive: true });
		const { layout, weights } = encodeHead(model.head);
		const incoming = path.join(modelDir, `.incoming-${process.pid}-${crypto.randomBytes(6).toString('hex')}`);
		try {
			await fs.mkdir(incoming);
			await writeDurably(path.join(incoming, WEIGHTS), weights);
			// Two saves racing for the same number: the loser's rename fails and it takes the next one.
			for (let attempt = 0; attempt < 100; attempt++) {
				const versions = await this.versions(name);
				const { manifest, text } = manifestFor(name, (versions[versions.length - 1] ?? 0) + 1, model, layout);
				await writeDurably(path.join(incoming, MANIFEST), text);
				try {
					await fs.rename(incoming, path.join(modelDir, String(manifest.version)));
					return manifest;
				} catch (error) {
					const code = (error as NodeJS.ErrnoException).code;
					if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw error;
				}
			}
			throw new Error(`could not find a free version number for ${name}`);
		} finally {
			await fs.rm(incoming, { recursive: true, force: true });
		}
	}
}

/**
 * The manifest of version `version` and its JSON text. What load would refuse is refused now,
 * before a version that can never classify exists.
 */
export function manifestFor(name: string, version: number, model: NewModel, layout: ModelManifest['head']): { manifest: ModelManifest; text: string } {
	const manifest: ModelManifest = { ...model.manifest, name, version, head: layout };
	const text = JSON.stringify(manifest, null, 2);
	const origin: ManifestOrigin = { from: 'save', name, version };
	parseManifest(manifest, origin);
	if (Buffer.byteLength(text) > MODEL_LIMITS.manifestBytes) throw damagedModel(origin, `its manifest would be ${Buffer.byteLength(text)} bytes, more than ${MODEL_LIMITS.manifestBytes}`);
	return { manifest, text };
}

/** A manifest's JSON, refused unread when it is not a file or is over the size bound. */
async function readBounded(file: string, limit: number, origin: ManifestOrigin): Promise<unknown> {
	const stat = await fs.stat(file);
	if (!stat.isFile() || stat.size > limit) throw damagedModel(origin, `${MANIFEST} is ${stat.isFile() ? `${stat.size} bytes, more than ${limit}` : 'not a file'}`);
	try {
		return JSON.parse(await fs.readFile(file, 'utf8'));
	} catch {
		throw damagedModel(origin, `${MANIFEST} is not valid JSON`);
	}
}

async function writeDurably(file: string, data: Buffer | string): Promise<void> {
	const handle = await fs.open(file, 'w');
	try {
		await handle.writeFile(data);
		await handle.sync();
	} finally {
		await handle.close();
	}
}
