import { sample } from './helpers/env';
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import sharp from 'sharp';
import { catalogBackbone, classify, extractFeatures, IMAGE_VIEWS, loadBackbone, predictHead, trainHead } from '../engine';
import { decodeImage, decodeViews } from '../engine/inputs/image';
import { classifyViews, extractViewFeatures } from '../engine/inputs/views';

const SIZE = { height: 96, width: 128 };
const ZOOMED = { height: 110, width: 146 };
const LIMIT = 50_000_000;
const raw = (image: Uint8Array, size: { height: number; width: number }) => sharp(image, { raw: { ...size, channels: 3 } });

test('the views of a real photo: itself, its mirror image, and the corners of a zoomed decode', async () => {
	const [photo] = sample('flowers5', 1);
	const views = await decodeViews(photo.bytes, SIZE, 'centreCrop', LIMIT);
	assert.equal(views.length, IMAGE_VIEWS.length);
	const original = await decodeImage(photo.bytes, SIZE, 'centreCrop', LIMIT);
	assert.deepEqual(views[0], original, 'the first view is what Classify sees without averaging');
	// libvips' own mirror of the decoded pixels.
	const flopped = await raw(original, SIZE).flop().raw().toBuffer();
	assert.deepEqual(Buffer.from(views[1]), flopped);
	assert.notDeepEqual(views[1], views[0]);
	const zoomed = await decodeImage(photo.bytes, ZOOMED, 'centreCrop', LIMIT);
	const corners = [
		[0, 0],
		[0, ZOOMED.width - SIZE.width],
		[ZOOMED.height - SIZE.height, 0],
		[ZOOMED.height - SIZE.height, ZOOMED.width - SIZE.width],
	];
	for (const [k, [top, left]] of corners.entries()) {
		const corner = await raw(zoomed, ZOOMED).extract({ top, left, ...SIZE }).raw().toBuffer();
		assert.deepEqual(Buffer.from(views[2 + k]), corner, IMAGE_VIEWS[2 + k]);
	}
});

test('test-time averaging classifies by the mean of every view, each view through the network once', async () => {
	const backbone = await loadBackbone(catalogBackbone('mobilenet_v1_0.25_224'));
	const photos = sample('cats_vs_dogs', 2);
	const images = [...photos.map((p) => p.bytes), Buffer.from('not an image')];
	const perImage = await extractViewFeatures(backbone, images, { batchSize: 8 });
	assert.ok(perImage[4] instanceof Error, 'a bad image gets its error, the others their views');
	const views = perImage.slice(0, 4) as Float32Array[][];
	assert.ok(views.every((v) => v.length === IMAGE_VIEWS.length && v.every((f) => f.length === backbone.featureSize)));
	// The first view is the plain image's features.
	const plain = (await extractFeatures(backbone, photos.map((p) => p.bytes))) as Float32Array[];
	views.forEach((v, i) => v[0].forEach((x, j) => assert.ok(Math.abs(x - plain[i][j]) < 1e-4, `image ${i} feature ${j}`)));
	const { head } = await trainHead(plain, photos.map((p) => p.label), { validationSplit: 0 });
	const averaged = classifyViews(head, views, { topK: 2 });
	views.forEach((v, i) => {
		const probabilities = predictHead(head, v);
		const expected = head.labels.map((_, c) => probabilities.reduce((sum, p) => sum + p[c], 0) / IMAGE_VIEWS.length);
		const best = expected.indexOf(Math.max(...expected));
		assert.equal(averaged[i].label, head.labels[best]);
		assert.ok(Math.abs(averaged[i].confidence - expected[best]) < 1e-6);
	});
	// Averaging changes the confidence: the views are not all the same image.
	const single = classify(head, views.map((v) => v[0]));
	assert.ok(single.some((p, i) => Math.abs(p.confidence - averaged[i].confidence) > 1e-4));
});
