/**
 * Test environment: the shared real data (TL_TEST_DATA, default ../shared/data beside the repo),
 * and a fresh temporary n8n user folder, model store and cache for each test file. Import this
 * first: n8n-core reads N8N_USER_FOLDER when it loads.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readDataset, type LabelledImage } from '../../scripts/dataset';

export const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
export const DATA_DIR = path.resolve(process.env.TL_TEST_DATA ?? path.join(REPO_ROOT, '..', 'shared', 'data'));
export const MIRROR_DIR = path.join(DATA_DIR, 'mirror');
export const DATASETS_DIR = path.join(DATA_DIR, 'image_datasets');

export const TEMP_DIR = mkdtempSync(path.join(os.tmpdir(), 'tl-test-'));
process.env.N8N_USER_FOLDER = TEMP_DIR;
process.env.TL_MODEL_STORE = path.join(TEMP_DIR, 'models');
process.env.TL_MODEL_CACHE = path.join(TEMP_DIR, 'cache');
process.env.TL_MODEL_MIRROR = MIRROR_DIR;
process.env.N8N_DIAGNOSTICS_ENABLED = 'false';
// n8n reads files (custom models given by path included) only under these folders; its default is ~/.n8n-files.
process.env.N8N_RESTRICT_FILE_ACCESS_TO = DATA_DIR;

export { readDataset };

/** A few real photos of a dataset, `perClass` of each label, from one split. */
export function sample(dataset: string, perClass: number, split = 'train'): (LabelledImage & { bytes: Buffer })[] {
	const counts = new Map<string, number>();
	return readDataset(path.join(DATASETS_DIR, dataset))
		.filter((e) => e.split === split)
		.filter((e) => {
			const n = counts.get(e.label) ?? 0;
			counts.set(e.label, n + 1);
			return n < perClass;
		})
		.map((e) => ({ ...e, bytes: readFileSync(e.file) }));
}
