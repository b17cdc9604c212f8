import { DATA_DIR } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { catalogBackbone, tf, TransferLearningError } from '../engine';
import { UseLiteEncoder } from '../engine/text/use-lite';
import { UseLitePool } from '../engine/text/use-lite-pool';
import { readTextDataset } from '../scripts/text-dataset';

const USE = catalogBackbone('universal_sentence_encoder_lite', 'text');
const texts = readTextDataset(path.join(DATA_DIR, 'text', 'banking77_10intents', 'banking77_10intents.csv'))
	.slice(0, 37)
	.map((e) => e.text);
// Each worker is an OS thread of this process.
const threads = () => readdirSync('/proc/self/task').length;
const assertClose = (actual: Float32Array[], expected: Float32Array[]) => {
	assert.equal(actual.length, expected.length);
	actual.forEach((vector, i) => {
		assert.equal(vector.length, 512);
		vector.forEach((v, j) => assert.ok(Math.abs(v - expected[i][j]) <= 1e-5, `text ${i}, value ${j}: ${v} vs ${expected[i][j]}`));
	});
};

// First: the other tests' workers may still be exiting when theirs ends.
test('dispose stops the workers, rejects what was waiting, and leaves no tensor on the main thread', async () => {
	const tensors = tf.memory().numTensors;
	const before = threads();
	const pool = await UseLitePool.load(USE, 2);
	const running = threads();
	const pending = pool.embed(texts);
	pool.dispose();
	assert.ok(running >= before + 2, 'each worker runs as a thread');
	await assert.rejects(pending, /disposed/);
	await assert.rejects(pool.embed(['after']), /disposed/);
	// terminate() is asynchronous.
	for (let i = 0; i < 100 && threads() > before; i++) await new Promise((r) => setTimeout(r, 20));
	assert.equal(threads(), before);
	assert.equal(tf.memory().numTensors, tensors);
});

test('the worker pool gives the vectors one wasm thread gives, in input order', async () => {
	const single = await UseLiteEncoder.load(USE, { backend: 'wasm' });
	const pool = await UseLitePool.load(USE, 2);
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

test('concurrent calls on the pool each get their own vectors', async () => {
	const pool = await UseLitePool.load(USE, 2);
	try {
		const alone = await Promise.all(texts.slice(0, 12).map((t) => pool.embed([t])));
		const together = await pool.embed(texts.slice(0, 12));
		assertClose(alone.map(([vector]) => vector), together);
	} finally {
		pool.dispose();
	}
});

test('an error in a worker rejects that call only, and the pool keeps working', async () => {
	const pool = await UseLitePool.load(USE, 2);
	try {
		// Not a string: the worker's tokenizer throws.
		await assert.rejects(pool.embed(['fine', 42 as unknown as string]), (error: Error) => error instanceof TransferLearningError && /slice|not a function/.test(error.message));
		const [vector] = await pool.embed(['still works']);
		assert.equal(vector.length, 512);
	} finally {
		pool.dispose();
	}
});
