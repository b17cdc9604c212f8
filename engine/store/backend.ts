import type { ModelManifest, TrainedModel } from './model';

export interface StoredModelSummary {
	name: string;
	latestVersion: number;
	versions: number[];
}

export type NewModel = { manifest: Omit<ModelManifest, 'name' | 'version' | 'head'>; head: TrainedModel['head'] };

/** One stored version: `key` changes whenever what is stored under that number does; `read` loads it. */
export interface StoredVersion {
	key: string;
	read(): Promise<TrainedModel>;
}

/**
 * Where trained models live. Names reach a backend already checked; versions are complete once
 * listed (a half-written version is never seen), and `latest` is the highest one.
 */
export interface StoreBackend {
	/** The folder, or the database without its password: for messages and the log. */
	readonly location: string;
	versions(name: string): Promise<number[]>;
	list(): Promise<StoredModelSummary[]>;
	version(name: string, version: number): Promise<StoredVersion>;
	/** Stores the model as the next version of `name`: two saves at once get two numbers. */
	save(name: string, model: NewModel): Promise<ModelManifest>;
}
