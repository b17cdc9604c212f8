import { DATASETS_DIR } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { decodeImage } from '../engine';
import { describeDecodeError } from '../engine/inputs/image';

const photo = readFileSync(path.join(DATASETS_DIR, 'cats_vs_dogs', readFileSync(path.join(DATASETS_DIR, 'cats_vs_dogs', 'labels.csv'), 'utf8').split('\n')[1].split(',')[0]));
const SIZE = { height: 32, width: 32 };
const LIMIT = 50_000_000;

test('every supported format decodes to RGB of the requested size', async () => {
	const encoders: Record<string, (s: sharp.Sharp) => sharp.Sharp> = {
		jpeg: (s) => s.jpeg(),
		png: (s) => s.png(),
		webp: (s) => s.webp(),
		gif: (s) => s.gif(),
		avif: (s) => s.avif(),
		tiff: (s) => s.tiff(),
	};
	const reference = await decodeImage(photo, SIZE, 'stretch', LIMIT);
	for (const [format, encode] of Object.entries(encoders)) {
		const bytes = await encode(sharp(photo)).toBuffer();
		const rgb = await decodeImage(bytes, SIZE, 'stretch', LIMIT);
		assert.equal(rgb.length, 32 * 32 * 3, format);
		// Lossy re-encoding changes pixels a little, not the picture.
		const meanDifference = rgb.reduce((n, v, i) => n + Math.abs(v - reference[i]), 0) / rgb.length;
		assert.ok(meanDifference < (format === 'gif' ? 30 : 12), `${format}: mean difference ${meanDifference}`);
	}
});

test('EXIF orientation is applied before resizing', async () => {
	// A 40x20 image, left half black, right half white, stored rotated with orientation 6 (90° CW).
	const wide = await sharp({ create: { width: 40, height: 20, channels: 3, background: '#000' } })
		.composite([{ input: { create: { width: 20, height: 20, channels: 3, background: '#fff' } }, left: 20, top: 0 }])
		.png()
		.toBuffer();
	const stored = await sharp(wide).rotate(-90).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
	const rgb = await decodeImage(stored, { height: 20, width: 40 }, 'stretch', LIMIT);
	const pixel = (x: number, y: number) => rgb[(y * 40 + x) * 3];
	assert.ok(pixel(5, 10) < 60 && pixel(35, 10) > 200, `left ${pixel(5, 10)}, right ${pixel(35, 10)}`);
});

test('transparency is flattened onto white and grey becomes RGB', async () => {
	const transparent = await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
	assert.ok((await decodeImage(transparent, { height: 4, width: 4 }, 'stretch', LIMIT)).every((v) => v === 255));
	const grey = await sharp(Buffer.alloc(64, 100), { raw: { width: 8, height: 8, channels: 1 } }).png().toBuffer();
	const rgb = await decodeImage(grey, { height: 4, width: 4 }, 'stretch', LIMIT);
	assert.equal(rgb.length, 48);
	assert.ok(rgb.every((v) => Math.abs(v - 100) <= 1));
});

test('resize modes: centre crop cuts the sides, fit pads with black, stretch keeps everything', async () => {
	// 60x20: red | green | blue thirds.
	const bands = await sharp({ create: { width: 60, height: 20, channels: 3, background: '#f00' } })
		.composite([
			{ input: { create: { width: 20, height: 20, channels: 3, background: '#0f0' } }, left: 20, top: 0 },
			{ input: { create: { width: 20, height: 20, channels: 3, background: '#00f' } }, left: 40, top: 0 },
		])
		.png()
		.toBuffer();
	// Resampling blends band edges a little; what matters is which colour dominates where.
	const colour = (rgb: Uint8Array, x: number, y: number) => {
		const [r, g, b] = rgb.subarray((y * 12 + x) * 3, (y * 12 + x) * 3 + 3);
		if (Math.max(r, g, b) < 40) return 'black';
		return r > g && r > b ? 'red' : g > b ? 'green' : 'blue';
	};
	const crop = await decodeImage(bands, { height: 12, width: 12 }, 'centreCrop', LIMIT);
	assert.deepEqual([colour(crop, 0, 6), colour(crop, 6, 6), colour(crop, 11, 6)], ['green', 'green', 'green']);
	const fit = await decodeImage(bands, { height: 12, width: 12 }, 'fitPad', LIMIT);
	assert.deepEqual([colour(fit, 6, 0), colour(fit, 0, 6), colour(fit, 6, 6), colour(fit, 11, 6), colour(fit, 6, 11)], ['black', 'red', 'green', 'blue', 'black']);
	const stretch = await decodeImage(bands, { height: 12, width: 12 }, 'stretch', LIMIT);
	assert.deepEqual([colour(stretch, 0, 0), colour(stretch, 6, 6), colour(stretch, 11, 11)], ['red', 'green', 'blue']);
});

test('bad images fail with a message that says what is wrong', async () => {
	await assert.rejects(decodeImage(Buffer.from('just some text, not a picture'), SIZE, 'centreCrop', LIMIT), /not an image/);
	await assert.rejects(decodeImage(photo.subarray(0, Math.floor(photo.length / 2)), SIZE, 'centreCrop', LIMIT), /truncated/);
	await assert.rejects(decodeImage(Buffer.alloc(0), SIZE, 'centreCrop', LIMIT), /empty/);
	const huge = await sharp({ create: { width: 20000, height: 20000, channels: 3, background: '#888' }, limitInputPixels: false }).png({ compressionLevel: 9 }).toBuffer();
	assert.ok(huge.length < 5_000_000, 'the bomb is small on disk');
	await assert.rejects(decodeImage(huge, SIZE, 'centreCrop', LIMIT), (e: Error & { hint?: string }) => /more than 50000000 pixels/.test(e.message) && /TL_MAX_IMAGE_PIXELS/.test(e.hint ?? ''));
});

test('a cut-off JPEG or PNG is called truncated even when libvips lost its message to another thread', async () => {
	const png = await sharp(photo).png().toBuffer();
	for (const whole of [photo, png]) {
		const cut = whole.subarray(0, Math.floor(whole.length / 2));
		assert.match(describeDecodeError('Unknown error', LIMIT, cut).message, /^The image file is truncated/);
		assert.match(describeDecodeError('Unknown error', LIMIT, whole).message, /^Could not decode the image: Unknown error/);
	}
});
