import sharp from 'sharp';
import { TransferLearningError, errorMessage } from './errors';

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
			throw describeDecodeError(errorMessage(again), maxPixels);
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

function describeDecodeError(message: string, maxPixels: number): TransferLearningError {
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
	if (/premature end|truncated|end of file/i.test(message)) {
		return new TransferLearningError(`The image file is truncated (${message})`, send);
	}
	return new TransferLearningError(`Could not decode the image: ${message}`, send);
}
