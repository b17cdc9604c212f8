import sharp from 'sharp';
import { TransferLearningError, errorMessage } from '../errors';

export type ResizeMode = 'centreCrop' | 'fitPad' | 'stretch';

export interface ImageSize {
	height: number;
	width: number;
}

const FIT: Record<ResizeMode, 'cover' | 'contain' | 'fill'> = {
	centreCrop: 'cover',
	fitPad: 'contain',
	stretch: 'fill',
};

// Each image is decoded once; libvips' operation cache would only hold on to memory.
sharp.cache(false);

/**
 * Decodes any image sharp reads (JPEG, PNG, WebP, GIF's first frame, AVIF, TIFF) into RGB bytes
 * of exactly `size`, in height-width-channel order: EXIF orientation applied, transparency
 * flattened onto white, grey expanded to RGB.
 */
export async function decodeImage(
	bytes: Buffer,
	size: ImageSize,
	mode: ResizeMode,
	maxPixels: number,
): Promise<Uint8Array> {
	if (bytes.length === 0) throw new TransferLearningError('The image is empty (0 bytes)');
	try {
		return await decode(bytes, size, mode, maxPixels);
	} catch (error) {
		if (EXPLAINED.test(errorMessage(error))) throw describeDecodeError(errorMessage(error), maxPixels);
		// libvips has one error buffer for all its threads: when several images of a batch fail at
		// once, a message can come back as "Unknown error". Decoding the image again, alone, recovers it.
		const retry = decodeAlone.then(() => decode(bytes, size, mode, maxPixels));
		decodeAlone = retry.then(
			() => undefined,
			() => undefined,
		);
		return retry.catch((again) => {
			throw describeDecodeError(errorMessage(again), maxPixels, bytes);
		});
	}
}

let decodeAlone: Promise<void> = Promise.resolve();

const EXPLAINED = /pixel limit|unsupported image format|premature end|truncated|end of file/i;

async function decode(bytes: Buffer, size: ImageSize, mode: ResizeMode, maxPixels: number): Promise<Uint8Array> {
	const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error', pages: 1 })
		.rotate()
		.flatten({ background: '#ffffff' })
		.resize(size.width, size.height, { fit: FIT[mode], position: 'centre', background: '#000000' })
		.toColourspace('srgb')
		.removeAlpha()
		.raw()
		.toBuffer({ resolveWithObject: true });
	if (info.channels !== 3 || data.length !== size.width * size.height * 3) {
		throw new Error(`decoder returned ${info.width}x${info.height}x${info.channels}`);
	}
	return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/**
 * A JPEG without its end-of-image marker or a PNG without its IEND chunk: the retry above can
 * still lose libvips' message while other images decode at the same moment, and a cut-off upload
 * deserves to be called what it is.
 */
function isCutShort(bytes: Buffer): boolean {
	const tail = bytes.subarray(Math.max(0, bytes.length - 64));
	if (bytes[0] === 0xff && bytes[1] === 0xd8) return !tail.includes(Buffer.from([0xff, 0xd9]));
	if (bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return !tail.includes(Buffer.from('IEND'));
	return false;
}

export function describeDecodeError(message: string, maxPixels: number, bytes?: Buffer): TransferLearningError {
	const send = 'Send a complete JPEG, PNG, WebP, GIF, AVIF or TIFF file';
	if (/pixel limit/i.test(message)) {
		return new TransferLearningError(
			`The image has more than ${maxPixels} pixels, the limit that guards against decompression bombs`,
			'Resize the image before sending it, or raise TL_MAX_IMAGE_PIXELS',
		);
	}
	if (/unsupported image format/i.test(message)) {
		return new TransferLearningError('The data is not an image (unsupported format)', send);
	}
	if (/premature end|truncated|end of file/i.test(message) || (bytes && isCutShort(bytes))) {
		return new TransferLearningError(`The image file is truncated (${message})`, send);
	}
	return new TransferLearningError(`Could not decode the image: ${message}`, send);
}

/**
 * The views augmentation trains on and test-time averaging averages, in this order: the image as
 * `decodeImage` gives it (what Classify sees without averaging), its mirror image, and the four
 * corners of the image decoded 8/7 larger (a zoom of about 14%, shifted), as random-crop
 * augmentation does, but the same every time so that features can be reused.
 */
export const IMAGE_VIEWS = ['original', 'flipped', 'top-left', 'top-right', 'bottom-left', 'bottom-right'] as const;
export type ImageView = (typeof IMAGE_VIEWS)[number];

const ZOOM = 8 / 7;

/** Each of IMAGE_VIEWS of the image, RGB bytes of `size` as decodeImage returns them. */
export async function decodeViews(bytes: Buffer, size: ImageSize, mode: ResizeMode, maxPixels: number): Promise<Uint8Array[]> {
	const zoomed = { height: Math.round(size.height * ZOOM), width: Math.round(size.width * ZOOM) };
	const [original, large] = await Promise.all([decodeImage(bytes, size, mode, maxPixels), decodeImage(bytes, zoomed, mode, maxPixels)]);
	const right = zoomed.width - size.width;
	const bottom = zoomed.height - size.height;
	return [
		original,
		flipHorizontal(original, size),
		crop(large, zoomed, 0, 0, size),
		crop(large, zoomed, 0, right, size),
		crop(large, zoomed, bottom, 0, size),
		crop(large, zoomed, bottom, right, size),
	];
}

/** The mirror image of RGB bytes in height-width-channel order: each row's pixels reversed. */
export function flipHorizontal(image: Uint8Array, size: ImageSize): Uint8Array {
	const { height, width } = size;
	const out = new Uint8Array(image.length);
	for (let y = 0; y < height; y++) {
		for (let x = 0; x < width; x++) {
			const from = (y * width + x) * 3;
			const to = (y * width + width - 1 - x) * 3;
			out[to] = image[from];
			out[to + 1] = image[from + 1];
			out[to + 2] = image[from + 2];
		}
	}
	return out;
}

function crop(image: Uint8Array, from: ImageSize, top: number, left: number, size: ImageSize): Uint8Array {
	const out = new Uint8Array(size.height * size.width * 3);
	for (let y = 0; y < size.height; y++) {
		const start = ((top + y) * from.width + left) * 3;
		out.set(image.subarray(start, start + size.width * 3), y * size.width * 3);
	}
	return out;
}
