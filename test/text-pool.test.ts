import { DATA_DIR } from './helpers/env';
import { watchEventLoop } from './helpers/event-loop';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { catalogBackbone, embedTexts, loadTextEncoder, tf, TransferLearningError } from '../engine';
import { UseLiteEncoder } from '../engine/text/use-lite';
import { UseLitePool } from '../engine/text/use-lite-pool';
import { readTextDataset } from '../scripts/text-dataset';

const USE = catalogBackbone('universal_sentence_encoder_lite', 'text');
const banking = readTextDataset(path.join(DATA_DIR, 'text', 'banking77_10intents', 'banking77_10intents.csv')).map((e) => e.text);
const texts = banking.slice(0, 37);
// Each worker is an OS thread of this process.
const threads = () => readdirSync('/proc/self/task').length;
const threadsBackTo = async (count: number) => {
	// terminate() is asynchronous.
	for (let i = 0; i < 250 && threads() > count; i++) await setTimeout(20);
	assert.equal(threads(), count);
};
const assertClose = (actual: Float32Array[], expected: Float32Array[]) => {
	assert.equal(actual.length, expected.length);
	actual.forEach((vector, i) => {
		assert.equal(vector.length, 512);
		vector.forEach((v, j) => assert.ok(Math.abs(v - expected[i][j]) <= 1e-5, `text ${i}, value ${j}: ${v} vs ${expected[i][j]}`));
	});
};
/** The pool's workers as they stand, for what the public interface does not show. */
const workersOf = async (pool: UseLitePool) => {
	const running = (pool as unknown as { running?: Promise<{ pending: Map<number, unknown> }[]> }).running;
	return running ? await running : [];
};

// First: the other tests' workers may still be exiting when theirs ends.
test('dispose stops the workers, rejects what was waiting, and leaves no tensor on the main thread', async () => {
	const tensors = tf.memory().numTensors;
	const before = threads();
	const pool = await UseLitePool.load(USE, { size: 2 });
	const running = threads();
	const pending = pool.embed(texts);
	pool.dispose();
	assert.ok(running >= before + 2, 'each worker runs as a thread');
	await assert.rejects(pending, /disposed/);
	await assert.rejects(pool.embed(['after']), /disposed/);
	await threadsBackTo(before);
	assert.equal(tf.memory().numTensors, tensors);
});

test('idle workers end after idleMs; the next call starts them again and gets the same vectors', async () => {
	const before = threads();
	const pool = await UseLitePool.load(USE, { size: 1, idleMs: 300 });
	try {
		const first = await pool.embed(texts.slice(0, 5));
		assert.ok(threads() > before, 'the worker runs');
		await threadsBackTo(before);
		assert.deepEqual(await workersOf(pool), []);
		assertClose(await pool.embed(texts.slice(0, 5)), first);
		assert.equal(pool.backendName, 'wasm');
	} finally {
		pool.dispose();
	}
	await threadsBackTo(before);
});

test('the worker pool gives the vectors one wasm thread gives, in input order', async () => {
	const single = await UseLiteEncoder.load(USE, { backend: 'wasm' });
	const pool = await UseLitePool.load(USE, { size: 2 });
	try {
		// 37 texts: chunks of unequal length; a one-text batch goes to one worker.
		for (const batch of [texts, texts.slice(0, 1)]) {
			assertClose(await pool.embed(batch), await single.embed(batch));
		}
	} finally {
		single.dispose();
		pool.dispose();
	}
});

test('concurrent calls each get their own vectors, and wait their turn past two chunks in flight per worker', async () => {
	const pool = await UseLitePool.load(USE, { size: 2 });
	try {
		const workers = await workersOf(pool);
		let most = 0;
		const watch = setInterval(() => (most = Math.max(most, ...workers.map((w) => w.pending.size))), 1);
		const alone = await Promise.all(texts.slice(0, 24).map((t) => pool.embed([t])));
		clearInterval(watch);
		assert.ok(most >= 1 && most <= 2, `at most ${most} chunks in flight on a worker`);
		const together = await pool.embed(texts.slice(0, 24));
		assertClose(alone.map(([vector]) => vector), together);
	} finally {
		pool.dispose();
	}
});

test('an error in a worker rejects that call only; a worker that dies is replaced on the next call', async () => {
	const pool = await UseLitePool.load(USE, { size: 2 });
	try {
		// Not a string: the worker's tokenizer throws.
		await assert.rejects(pool.embed(['fine', 42 as unknown as string]), (error: Error) => error instanceof TransferLearningError && /slice|not a function/.test(error.message));
		const [vector] = await pool.embed(['still works']);
		assert.equal(vector.length, 512);

		const [worker] = (await workersOf(pool)) as unknown as { thread: { terminate(): Promise<number> } }[];
		const during = pool.embed(texts);
		await worker.thread.terminate();
		await assert.rejects(during, /worker thread stopped/);
		assertClose(await pool.embed(texts.slice(0, 3)), (await pool.embed(texts)).slice(0, 3));
	} finally {
		pool.dispose();
	}
});

test('the event loop stays responsive while a large batch embeds through loadTextEncoder', async () => {
	const encoder = await loadTextEncoder(USE);
	await encoder.embed(['warm up']);
	const batch = banking.slice(0, 320);
	const loop = watchEventLoop(10);
	const started = performance.now();
	const vectors = await embedTexts(encoder, batch);
	const tookMs = performance.now() - started;
	const { maxGapMs } = await loop.stop();
	console.log(`# ${batch.length} texts in ${(tookMs / 1000).toFixed(1)} s; the event loop's longest gap ${maxGapMs.toFixed(0)} ms`);
	assert.ok(vectors.every((v) => v instanceof Float32Array && v.length === 512));
	// Encoded on the event loop, the batch holds it from start to end. Off it, what remains is this
	// busy machine's scheduling: 60-250 ms seen on two cores under a load average of 8.
	assert.ok(maxGapMs < Math.min(1000, tookMs / 4), `the event loop stalled for ${maxGapMs.toFixed(0)} ms while ${batch.length} texts took ${tookMs.toFixed(0)} ms`);
});
