import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';

export interface LabelledImage {
	file: string;
	label: string;
	split: string;
}

/** Reads a dataset folder: `labels.csv` (path,label) and `splits.csv` (path,split). */
export function readDataset(dir: string): LabelledImage[] {
	const rows = (file: string) =>
		readFileSync(path.join(dir, file), 'utf8')
			.trim()
			.split(/\r?\n/)
			.slice(1)
			.map((line) => line.split(','));
	const splits = new Map(rows('splits.csv').map(([p, s]) => [p, s]));
	return rows('labels.csv').map(([p, label]) => ({ file: path.join(dir, p), label, split: splits.get(p) ?? 'train' }));
}

/** Copies images into `<folder>/<label>/`: the layout the Train and Retrain examples read. */
export async function copyIntoClassFolders(folder: string, images: LabelledImage[]): Promise<void> {
	for (const image of images) {
		await fs.mkdir(path.join(folder, image.label), { recursive: true });
		await fs.copyFile(image.file, path.join(folder, image.label, path.basename(image.file)));
	}
}
