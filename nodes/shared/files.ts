import * as path from 'node:path';
import type { IExecuteFunctions } from 'n8n-workflow';
import type { LocalFileAccess } from '../../engine';

/**
 * n8n's own rule for reading files from disk (N8N_RESTRICT_FILE_ACCESS_TO, its user folder,
 * N8N_BLOCK_FILE_PATTERNS), so a custom model path is readable exactly where Read Files from Disk
 * could read it. Links are resolved first, as n8n does; a path whose folder does not exist is
 * judged as written, and then fails as missing.
 */
export function n8nFileAccess(ctx: IExecuteFunctions): LocalFileAccess {
	return async (file) => {
		type Resolved = Awaited<ReturnType<typeof ctx.helpers.resolvePath>>;
		const resolved = await ctx.helpers.resolvePath(file).catch(() => path.resolve(file) as Resolved);
		return !ctx.helpers.isFilePathBlocked(resolved);
	};
}
