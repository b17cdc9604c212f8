import type { Pool, PoolClient } from 'pg';
import { TransferLearningError } from '../errors';
import { damagedModel, decodeHead, encodeHead, headBytes, MODEL_LIMITS, parseManifest, type ManifestOrigin, type ModelManifest } from './model';
import type { PostgresConnection } from '../settings';
import type { NewModel, StoreBackend, StoredModelSummary, StoredVersion } from './backend';
import { manifestFor } from './folder';

/** The package's own schema: n8n's tables (in DB_POSTGRESDB_SCHEMA, `public` by default) are never touched. */
export const SCHEMA = 'transfer_learning';

/**
 * Each step brings the schema from the version before it; applied in order, once, under a lock,
 * by whichever worker connects first. `models.latest_version` is the last number handed out:
 * numbers are taken by the saving transaction and never reused, so a rolled-back save leaves no
 * gap and a deleted version's number never comes back.
 */
const MIGRATIONS = [
	`CREATE TABLE ${SCHEMA}.models (
		name text PRIMARY KEY,
		latest_version integer NOT NULL
	);
	CREATE TABLE ${SCHEMA}.model_versions (
		id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
		name text NOT NULL REFERENCES ${SCHEMA}.models (name),
		version integer NOT NULL,
		manifest text NOT NULL,
		weights bytea NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (name, version)
	);`,
];

/**
 * Trained models in PostgreSQL: a version is one row, written in the transaction that takes its
 * number, so every worker sees it complete or not at all, and sees it at its next load (each load
 * asks for the latest number: one indexed query).
 */
export class PostgresStore implements StoreBackend {
	readonly location: string;
	private migrated?: Promise<void>;

	constructor(
		private readonly pool: Pool,
		connection: PostgresConnection,
	) {
		this.location = connection.label;
	}

	async versions(name: string): Promise<number[]> {
		const { rows } = await this.query<{ version: number }>(`SELECT version FROM ${SCHEMA}.model_versions WHERE name = $1 ORDER BY version`, [name]);
		return rows.map((r) => r.version);
	}

	async list(): Promise<StoredModelSummary[]> {
		const { rows } = await this.query<{ name: string; versions: number[] }>(
			`SELECT name, array_agg(version ORDER BY version) AS versions FROM ${SCHEMA}.model_versions GROUP BY name ORDER BY name`,
		);
		return rows.map((r) => ({ name: r.name, versions: r.versions, latestVersion: r.versions[r.versions.length - 1] }));
	}

	async version(name: string, version: number): Promise<StoredVersion> {
		const origin: ManifestOrigin = { from: 'store', name, version };
		const { rows } = await this.query<{ id: string }>(`SELECT id FROM ${SCHEMA}.model_versions WHERE name = $1 AND version = $2`, [name, version]);
		if (!rows.length) throw damagedModel(origin, 'it was deleted while being loaded');
		const id = rows[0].id;
		return {
			key: `${this.location}\0${id}`,
			read: async () => {
				// Sizes first, as the folder store stats before reading: an edited row is refused unread.
				const { rows: [row] } = await this.query<{ manifest_bytes: number; weights_bytes: number; manifest: string | null }>(
					`SELECT octet_length(manifest) AS manifest_bytes, octet_length(weights) AS weights_bytes,
						CASE WHEN octet_length(manifest) <= $2 THEN manifest END AS manifest
					FROM ${SCHEMA}.model_versions WHERE id = $1`,
					[id, MODEL_LIMITS.manifestBytes],
				);
				if (!row) throw damagedModel(origin, 'it was deleted while being loaded');
				if (row.manifest === null) throw damagedModel(origin, `its manifest is ${row.manifest_bytes} bytes, more than ${MODEL_LIMITS.manifestBytes}`);
				let raw: unknown;
				try {
					raw = JSON.parse(row.manifest);
				} catch {
					throw damagedModel(origin, 'its manifest is not valid JSON');
				}
				const manifest = parseManifest(raw, origin);
				if (row.weights_bytes !== headBytes(manifest)) throw damagedModel(origin, `its weights are ${row.weights_bytes} bytes, the manifest needs ${headBytes(manifest)}`);
				const { rows: [weights] } = await this.query<{ weights: Buffer }>(`SELECT weights FROM ${SCHEMA}.model_versions WHERE id = $1`, [id]);
				if (!weights) throw damagedModel(origin, 'it was deleted while being loaded');
				return { manifest, head: decodeHead(manifest, weights.weights, origin) };
			},
		};
	}

	/**
	 * Takes the next number by updating the model's row, which locks it until commit: a second save
	 * of the same model waits the few milliseconds of the insert, then takes the number after.
	 */
	async save(name: string, model: NewModel): Promise<ModelManifest> {
		const { layout, weights } = encodeHead(model.head);
		return this.transaction(async (client) => {
			const { rows } = await client.query<{ latest_version: number }>(
				`INSERT INTO ${SCHEMA}.models AS m (name, latest_version) VALUES ($1, 1)
				ON CONFLICT (name) DO UPDATE SET latest_version = m.latest_version + 1 RETURNING latest_version`,
				[name],
			);
			const { manifest, text } = manifestFor(name, rows[0].latest_version, model, layout);
			await client.query(`INSERT INTO ${SCHEMA}.model_versions (name, version, manifest, weights) VALUES ($1, $2, $3, $4)`, [name, manifest.version, text, weights]);
			return manifest;
		});
	}

	close(): Promise<void> {
		return this.pool.end();
	}

	private async query<R extends object>(text: string, values: unknown[] = []): Promise<{ rows: R[] }> {
		await this.migrate();
		return this.pool.query<R>(text, values).catch((error) => {
			throw unreachable(this.location, error);
		});
	}

	private async transaction<T>(body: (client: PoolClient) => Promise<T>): Promise<T> {
		await this.migrate();
		const client = await this.pool.connect().catch((error) => {
			throw unreachable(this.location, error);
		});
		try {
			await client.query('BEGIN');
			const result = await body(client);
			await client.query('COMMIT');
			return result;
		} catch (error) {
			await client.query('ROLLBACK').catch(() => {});
			throw error;
		} finally {
			client.release();
		}
	}

	/** Once per process, retried after a failure (the database may come up after n8n). */
	private migrate(): Promise<void> {
		this.migrated ??= this.applyMigrations().catch((error) => {
			this.migrated = undefined;
			throw error;
		});
		return this.migrated;
	}

	private async applyMigrations(): Promise<void> {
		const client = await this.pool.connect().catch((error) => {
			throw unreachable(this.location, error);
		});
		try {
			await client.query('BEGIN');
			// Workers starting together: one creates the schema, the others wait and find it made.
			await client.query(`SELECT pg_advisory_xact_lock(hashtext('${SCHEMA}'))`);
			await client.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
			await client.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
			const { rows } = await client.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${SCHEMA}.migrations`);
			const applied = rows[0].version ?? 0;
			if (applied > MIGRATIONS.length) {
				throw new TransferLearningError(
					`The model store ${this.location} was set up by a newer version of n8n-nodes-transfer-learning (schema version ${applied})`,
					'Update n8n-nodes-transfer-learning on this n8n to the version the other workers run',
				);
			}
			for (let version = applied + 1; version <= MIGRATIONS.length; version++) {
				await client.query(MIGRATIONS[version - 1]);
				await client.query(`INSERT INTO ${SCHEMA}.migrations (version) VALUES ($1)`, [version]);
			}
			await client.query('COMMIT');
		} catch (error) {
			await client.query('ROLLBACK').catch(() => {});
			throw error instanceof TransferLearningError ? error : unreachable(this.location, error);
		} finally {
			client.release();
		}
	}
}

/** PostgreSQL's own words go to the log only: they name hosts and ports that webhook callers must not learn. */
function unreachable(location: string, error: unknown): TransferLearningError {
	return new TransferLearningError(
		'The model store (PostgreSQL) could not be reached or refused the request',
		'Check TL_MODEL_STORE (or, with TL_MODEL_STORE=n8n-database, the DB_POSTGRESDB_* settings) and that the database is running',
		`model store ${location}: ${error instanceof Error ? error.message : String(error)}`,
	);
}
