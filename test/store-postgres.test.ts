/**
 * The PostgreSQL model store against a real PostgreSQL, started in a temporary folder on a
 * loopback port (Debian's package; scripts/test.sh installs it when it can). Several n8n workers
 * share one such store, so concurrency is tested across processes, not just promises.
 */
import { TEMP_DIR } from './helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { catalogBackbone, exportModel, importModel, ModelStore, saveTrainedModel, trainHead, TransferLearningError, type TrainingResult } from '../engine';
import { seededRandom } from '../engine/head/random';
import { freePort } from '../scripts/n8n-instance';
import { POSTGRES_MISSING, postgresBin, startPostgres, type Postgres } from './queue/services';

const run = promisify(execFile);
const skip = postgresBin() ? false : POSTGRES_MISSING;
if (skip) console.log(`# skipped: ${POSTGRES_MISSING}`);

let postgres: Postgres;
let trained: TrainingResult;
const spec = catalogBackbone('mobilenet_v1_0.25_224');
const prep = { resizeMode: 'centreCrop' as const, l2Normalize: false };

/** A fresh database per test: each starts from an empty store, as a new deployment does. */
let databases = 0;
async function freshDatabase(): Promise<string> {
	const name = `store${++databases}`;
	await sql(postgres.url(), `CREATE DATABASE ${name}`);
	return postgres.url(name);
}

async function sql<R = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<R[]> {
	const client = new Client({ connectionString: url });
	await client.connect();
	try {
		return (await client.query(text, values)).rows as R[];
	} finally {
		await client.end();
	}
}

before(async () => {
	if (skip) return;
	postgres = await startPostgres();
	const random = seededRandom(3);
	const features = Array.from({ length: 20 }, (_, i) => Float32Array.from({ length: 8 }, (_, d) => (d === i % 2 ? 3 : 0) + random()));
	trained = await trainHead(features, features.map((_, i) => (i % 2 ? 'b' : 'a')), { epochs: 5 });
});

after(async () => {
	await postgres?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

test('versions count up, latest is served, a version comes back byte-exact and travels as an exported file', { skip }, async () => {
	const url = await freshDatabase();
	const store = new ModelStore(url);
	assert.equal(store.root, `postgres://tl@127.0.0.1:${postgres.port}/store${databases}`);
	const v1 = await saveTrainedModel(store, 'parcels', trained, spec, prep);
	const v2 = await saveTrainedModel(store, 'parcels', trained, spec, prep);
	assert.deepEqual([v1.manifest.version, v2.manifest.version], [1, 2]);
	assert.equal((await store.load('parcels')).manifest.version, 2);
	const one = await store.load('parcels', 1);
	assert.deepEqual(one.manifest, v1.manifest);
	assert.deepEqual(Array.from(one.head.layers[0].kernel), Array.from(trained.head.layers[0].kernel));
	const travelled = importModel(exportModel(one));
	assert.deepEqual(travelled.manifest, v1.manifest);
	assert.deepEqual(Array.from(travelled.head.mean), Array.from(trained.head.mean));
	assert.deepEqual(await store.list(), [{ name: 'parcels', versions: [1, 2], latestVersion: 2 }]);
	await assert.rejects(store.load('parcels', 9), /Model "parcels" has no version 9/);
	await assert.rejects(store.load('nothing'), (e: TransferLearningError) => /no model named "nothing"/.test(e.message) && !/parcels|127\.0\.0\.1/.test(`${e.message} ${e.hint}`) && /parcels/.test(e.logDetail ?? ''));
	for (const name of ['../x', '', "a'; DROP TABLE x; --", 'x'.repeat(101)]) await assert.rejects(saveTrainedModel(store, name, trained, spec, prep), /not a valid model name/);
	// The package's tables live in a schema of their own, beside n8n's.
	const tables = await sql<{ table_name: string }>(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'transfer_learning' ORDER BY 1");
	assert.deepEqual(tables.map((t) => t.table_name), ['migrations', 'model_versions', 'models']);
});

test('two processes saving at once, on a database neither has set up, get distinct numbers with no gap', { skip }, async () => {
	const url = await freshDatabase();
	const file = path.join(TEMP_DIR, 'race.tlmodel');
	await fs.writeFile(file, exportModel({ manifest: { ...(await saveTrainedModel(new ModelStore(path.join(TEMP_DIR, 'race')), 'm', trained, spec, prep)).manifest }, head: trained.head }));
	// Each process is a worker of its own, with its own pool: five saves at once each.
	const worker = `
		const { ModelStore, importModel } = require(${JSON.stringify(path.resolve(__dirname, '..', 'engine'))});
		const { manifest, head } = importModel(require('fs').readFileSync(${JSON.stringify(file)}));
		const store = new ModelStore(${JSON.stringify(url)});
		Promise.all(Array.from({ length: 5 }, () => store.save('race', { manifest, head })))
			.then((saved) => console.log(JSON.stringify(saved.map((m) => m.version))));`;
	const outputs = await Promise.all([0, 1].map(() => run(process.execPath, ['-e', worker])));
	const numbers = outputs.flatMap(({ stdout }) => JSON.parse(stdout) as number[]).sort((a, b) => a - b);
	assert.deepEqual(numbers, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
	assert.deepEqual(await new ModelStore(url).versions('race'), numbers);
});

test('a save that dies mid-transaction leaves no version and no gap; the next save takes the next number', { skip }, async () => {
	const url = await freshDatabase();
	const store = new ModelStore(url);
	await saveTrainedModel(store, 'm', trained, spec, prep);
	// What a worker killed mid-save leaves: a number taken in a transaction that never commits.
	const dying = new Client({ connectionString: url });
	await dying.connect();
	dying.on('error', () => {});
	await dying.query('BEGIN');
	await dying.query("UPDATE transfer_learning.models SET latest_version = latest_version + 1 WHERE name = 'm'");
	const waiting = saveTrainedModel(store, 'm', trained, spec, prep);
	await new Promise((resolve) => setTimeout(resolve, 300));
	await sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'UPDATE transfer_learning.models%' AND pid <> pg_backend_pid()");
	assert.equal((await waiting).manifest.version, 2);
	assert.deepEqual(await store.versions('m'), [1, 2]);
	// A save refused before it is written gives its number back too.
	await assert.rejects(store.save('m', { manifest: { ...(await store.load('m')).manifest, labels: ['only one'] }, head: trained.head }), /cannot be saved/);
	assert.equal((await saveTrainedModel(store, 'm', trained, spec, prep)).manifest.version, 3);
});

test('a version saved through another connection is served at the next load, not the cached one', { skip }, async () => {
	const url = await freshDatabase();
	const reader = new ModelStore(url);
	// Another pool, as another worker has: the same database under another host name.
	const writer = new ModelStore(url.replace('127.0.0.1', 'localhost'));
	await saveTrainedModel(writer, 'shared', trained, spec, prep);
	const first = await reader.load('shared');
	assert.equal(await reader.load('shared'), first, 'unchanged: served from memory');
	const random = seededRandom(9);
	const features = Array.from({ length: 20 }, (_, i) => Float32Array.from({ length: 8 }, (_, d) => (d === i % 2 ? 3 : 0) + random()));
	const other = await trainHead(features, features.map((_, i) => (i % 2 ? 'y' : 'x')), { epochs: 5 });
	await saveTrainedModel(writer, 'shared', other, spec, prep);
	const next = await reader.load('shared');
	assert.equal(next.manifest.version, 2);
	assert.deepEqual(next.head.labels, ['x', 'y']);
});

test('damaged rows are refused with the model and version named, oversized ones unread', { skip }, async () => {
	const url = await freshDatabase();
	const store = new ModelStore(url);
	for (let i = 0; i < 5; i++) await saveTrainedModel(store, 'm', trained, spec, prep);
	await sql(url, "UPDATE transfer_learning.model_versions SET weights = substring(weights from 1 for 12) WHERE version = 1");
	await sql(url, "UPDATE transfer_learning.model_versions SET manifest = (SELECT manifest FROM transfer_learning.model_versions WHERE version = 5) WHERE version = 2");
	await sql(url, "UPDATE transfer_learning.model_versions SET manifest = 'not json' WHERE version = 3");
	await sql(url, "UPDATE transfer_learning.model_versions SET manifest = repeat('x', 17 * 1024 * 1024) WHERE version = 4");
	await assert.rejects(store.load('m', 1), /^TransferLearningError: Model "m" version 1 is damaged: its weights are 12 bytes, the manifest needs \d+$/);
	await assert.rejects(store.load('m', 2), /Model "m" version 2 is damaged: its manifest is that of model "m" version 5/);
	await assert.rejects(store.load('m', 3), /Model "m" version 3 is damaged: its manifest is not valid JSON/);
	await assert.rejects(store.load('m', 4), /Model "m" version 4 is damaged: its manifest is 17825792 bytes, more than \d+/);
	assert.equal((await store.load('m')).manifest.version, 5);
});

test('an unreachable database or a newer schema gives a clear error; the message names no host', { skip }, async () => {
	const down = new ModelStore(`postgres://tl@127.0.0.1:${await freePort()}/postgres`);
	await assert.rejects(down.load('m'), (e: TransferLearningError) => {
		assert.equal(e.message, 'The model store (PostgreSQL) could not be reached or refused the request');
		assert.match(e.hint ?? '', /TL_MODEL_STORE/);
		assert.match(e.logDetail ?? '', /ECONNREFUSED/);
		return true;
	});
	const url = await freshDatabase();
	await new ModelStore(url).list();
	await sql(url, 'INSERT INTO transfer_learning.migrations (version) VALUES (99)');
	await assert.rejects(new ModelStore(url.replace('127.0.0.1', '[::ffff:127.0.0.1]')).list(), /set up by a newer version of n8n-nodes-transfer-learning \(schema version 99\)/);
});

test("TL_MODEL_STORE=n8n-database uses n8n's own PostgreSQL settings, and says so when n8n uses SQLite", { skip }, async () => {
	const url = await freshDatabase();
	const saved = { ...process.env };
	try {
		Object.assign(process.env, { TL_MODEL_STORE: 'n8n-database', DB_TYPE: 'postgresdb', DB_POSTGRESDB_HOST: '127.0.0.1', DB_POSTGRESDB_PORT: String(postgres.port), DB_POSTGRESDB_DATABASE: `store${databases}`, DB_POSTGRESDB_USER: 'tl' });
		await saveTrainedModel(new ModelStore(), 'via-n8n', trained, spec, prep);
		assert.deepEqual(await new ModelStore(url).versions('via-n8n'), [1]);
		process.env.DB_TYPE = 'sqlite';
		assert.throws(() => new ModelStore(), /TL_MODEL_STORE=n8n-database needs n8n to use PostgreSQL \(DB_TYPE=postgresdb\), but DB_TYPE is sqlite/);
	} finally {
		for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
		Object.assign(process.env, saved);
	}
});

test('model-store copy moves every version from a folder to PostgreSQL and back, and refuses to merge', { skip }, async () => {
	const url = await freshDatabase();
	const folder = path.join(TEMP_DIR, 'copy-from');
	for (let i = 0; i < 3; i++) await saveTrainedModel(new ModelStore(folder), 'a', trained, spec, prep);
	await saveTrainedModel(new ModelStore(folder), 'b', trained, spec, prep);
	// A deleted version leaves a gap the copy closes, saying so.
	await fs.rm(path.join(folder, 'a', '2'), { recursive: true });
	const command = (...args: string[]) => run(process.execPath, [path.resolve(__dirname, '..', 'scripts', 'model-store.js'), ...args]);
	const { stdout } = await command('copy', folder, url);
	assert.deepEqual(stdout.trim().split('\n'), [`a 1 -> ${new ModelStore(url).root} a 1`, `a 3 -> ${new ModelStore(url).root} a 2`, `b 1 -> ${new ModelStore(url).root} b 1`]);
	const copied = new ModelStore(url);
	assert.deepEqual(await copied.list(), [{ name: 'a', versions: [1, 2], latestVersion: 2 }, { name: 'b', versions: [1], latestVersion: 1 }]);
	const original = await new ModelStore(folder).load('a', 3);
	const moved = await copied.load('a', 2);
	assert.deepEqual({ ...moved.manifest, version: 3 }, original.manifest);
	assert.deepEqual(Array.from(moved.head.layers[0].kernel), Array.from(original.head.layers[0].kernel));
	await assert.rejects(command('copy', folder, url, 'b'), /already has model "b" \(versions 1\)/);
	await command('copy', url, path.join(TEMP_DIR, 'copy-back'), 'b');
	assert.deepEqual(await new ModelStore(path.join(TEMP_DIR, 'copy-back')).versions('b'), [1]);
	assert.equal((await command('list', url)).stdout, 'a: versions 1, 2\nb: versions 1\n');
});
