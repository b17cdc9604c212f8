import { TransferLearningError } from '../errors';
import { LruCache } from '../lru';
import { sharePromise } from '../memo';
import { MODEL_NAME, type ModelManifest, type TrainedModel } from './model';
import { modelStoreLocation, settings, type ModelStoreLocation, type PostgresConnection } from '../settings';
import type { NewModel, StoreBackend, StoredModelSummary } from './backend';
import { FolderStore } from './folder';
import { PostgresStore } from './postgres';

export type { StoredModelSummary } from './backend';

export type VersionRef = 'latest' | number;

/** Loaded heads are small; keep plenty so a burst of webhook calls never re-reads the store. */
const loadedModels = new LruCache<string, Promise<TrainedModel>>(32);

/**
 * One pool per database, shared by every ModelStore of the process (the nodes make one per
 * execution). Bounded: a pool whose settings were replaced is closed when it falls out.
 */
const databases = new LruCache<string, PostgresStore>(4, (store) => void store.close());

/**
 * The trained models, wherever TL_MODEL_STORE keeps them (see engine/settings.ts): a folder, or
 * a PostgreSQL database shared by every n8n worker. `latest` is the highest complete version.
 */
export class ModelStore {
	private readonly backend: StoreBackend;

	/** `location`: a folder, a postgres:// URL or `n8n-database`, as TL_MODEL_STORE takes; default: TL_MODEL_STORE. */
	constructor(location?: string) {
		this.backend = openBackend(location === undefined ? settings().modelStore : modelStoreLocation(location));
	}

	/** The folder, or the database as `postgres://user@host:port/database`. */
	get root(): string {
		return this.backend.location;
	}

	static checkName(name: string): string {
		if (typeof name !== 'string' || !MODEL_NAME.test(name) || name.includes('..')) {
			throw new TransferLearningError(
				`"${name}" is not a valid model name`,
				'Use letters, digits, dots, dashes and underscores (up to 100), starting with a letter or digit',
			);
		}
		return name;
	}

	versions(name: string): Promise<number[]> {
		return this.backend.versions(ModelStore.checkName(name));
	}

	list(): Promise<StoredModelSummary[]> {
		return this.backend.list();
	}

	async resolveVersion(name: string, version: VersionRef): Promise<number> {
		const versions = await this.versions(name);
		if (!versions.length) {
			// Webhook callers see the message; the store's location and the other models go to the log only.
			const known = (await this.list()).map((m) => m.name);
			throw new TransferLearningError(
				`There is no model named "${name}"`,
				"Check the model name: the models this n8n has are listed in the Classify node's Model list, and Fine-Tune Head adds them",
				`model store ${this.root} holds ${known.length ? known.join(', ') : 'no models'}`,
			);
		}
		if (version === 'latest') return versions[versions.length - 1];
		if (!versions.includes(version)) {
			throw new TransferLearningError(`Model "${name}" has no version ${version}`, `Its versions are ${versions.join(', ')}`);
		}
		return version;
	}

	/** Loads a version, cached in memory under a key that changes when the stored version does. */
	async load(name: string, version: VersionRef = 'latest'): Promise<TrainedModel> {
		const resolved = await this.resolveVersion(name, version);
		const stored = await this.backend.version(name, resolved);
		return sharePromise(loadedModels, stored.key, () => stored.read());
	}

	/** Saves the model as the next version of `name` and returns its manifest. */
	save(name: string, model: NewModel): Promise<ModelManifest> {
		return this.backend.save(ModelStore.checkName(name), model);
	}
}

function openBackend(location: ModelStoreLocation): StoreBackend {
	if (location.kind === 'folder') return new FolderStore(location.dir);
	const key = JSON.stringify(location.connection);
	let store = databases.get(key);
	if (!store) {
		store = postgresStore(location.connection);
		databases.set(key, store);
	}
	return store;
}

/** `pg` is loaded only when a PostgreSQL store is configured: folder users never pay for it. */
function postgresStore(connection: PostgresConnection): PostgresStore {
	const { Pool } = require('pg') as typeof import('pg');
	const { label: _label, ...config } = connection;
	// Idle connections are closed so that an idle worker holds none, and never keep a process alive.
	const pool = new Pool({ ...config, max: 4, idleTimeoutMillis: 30_000, allowExitOnIdle: true });
	// An idle connection the server drops (a restart) must not crash n8n: the next query reconnects.
	pool.on('error', () => {});
	return new PostgresStore(pool, connection);
}
