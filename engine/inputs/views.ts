import type { Backbone } from '../backbones/backbone';
import { predictionsOf, type ClassifyOptions, type Prediction } from '../head/classifier';
import { predictHead, type Head } from '../head/head';
import { decodeViews, IMAGE_VIEWS, type ResizeMode } from './image';
import { settings } from '../settings';

/**
 * Features of every view of each image (IMAGE_VIEWS, in that order), or the error that image
 * caused, in input order: each image is decoded once per size and each view goes through the
 * network once, the views of a few images sharing a batch.
 */
export async function extractViewFeatures(
	backbone: Backbone,
	images: Buffer[],
	options: { resizeMode?: ResizeMode; batchSize?: number } = {},
): Promise<(Float32Array[] | Error)[]> {
	const imagesPerBatch = Math.max(1, Math.floor((options.batchSize ?? 16) / IMAGE_VIEWS.length));
	const { maxImagePixels } = settings();
	const results: (Float32Array[] | Error)[] = new Array(images.length);
	const release = backbone.hold();
	try {
		for (let start = 0; start < images.length; start += imagesPerBatch) {
			const decoded = await Promise.allSettled(
				images.slice(start, start + imagesPerBatch).map((bytes) => decodeViews(bytes, backbone.spec.inputSize, options.resizeMode ?? 'centreCrop', maxImagePixels)),
			);
			const good: number[] = [];
			decoded.forEach((d, i) => {
				if (d.status === 'fulfilled') good.push(i);
				else results[start + i] = d.reason instanceof Error ? d.reason : new Error(String(d.reason));
			});
			const features = await backbone.extract(good.flatMap((i) => (decoded[i] as PromiseFulfilledResult<Uint8Array[]>).value));
			good.forEach((i, j) => (results[start + i] = features.slice(j * IMAGE_VIEWS.length, (j + 1) * IMAGE_VIEWS.length)));
		}
	} finally {
		release();
	}
	return results;
}

/** Class probabilities averaged over the views of one image. */
export function averageProbabilities(perView: Float32Array[]): Float32Array {
	const out = new Float32Array(perView[0].length);
	for (const p of perView) for (let c = 0; c < out.length; c++) out[c] += p[c] / perView.length;
	return out;
}

/** Classify's predictions for images given as the features of their views: the views' probabilities averaged (test-time averaging). */
export function classifyViews(head: Head, viewsPerItem: Float32Array[][], options: ClassifyOptions = {}): Prediction[] {
	return predictionsOf(head, viewsPerItem.map((views) => averageProbabilities(predictHead(head, views))), options);
}
