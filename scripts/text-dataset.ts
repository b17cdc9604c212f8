import { promises as fs, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'csv-parse/sync';

export interface LabelledText {
	text: string;
	label: string;
	split: string;
}

/** A CSV with `text,label,split` columns (quoted as RFC 4180 has it). */
export function readTextDataset(file: string): LabelledText[] {
	const rows = parse(readFileSync(file, 'utf8'), { columns: true, skip_empty_lines: true }) as Record<string, string>[];
	for (const column of ['text', 'label', 'split']) {
		if (rows.length && !(column in rows[0])) throw new Error(`${file} has no "${column}" column`);
	}
	return rows.map((r) => ({ text: r.text, label: r.label, split: r.split }));
}

/** `perClass` examples of each label, chosen by `random`, in the order they were listed. */
export function samplePerClass<T extends { label: string }>(examples: T[], perClass: number, random: () => number): T[] {
	const byLabel = new Map<string, number[]>();
	examples.forEach((e, i) => byLabel.set(e.label, [...(byLabel.get(e.label) ?? []), i]));
	const chosen = new Set<number>();
	for (const indices of byLabel.values()) {
		for (let i = indices.length - 1; i > 0; i--) {
			const j = Math.floor(random() * (i + 1));
			[indices[i], indices[j]] = [indices[j], indices[i]];
		}
		indices.slice(0, perClass).forEach((i) => chosen.add(i));
	}
	return examples.filter((_, i) => chosen.has(i));
}

const csvField = (value: string) => (/[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value);

/** Writes the `train` rows of a `text,label,split` CSV as `text,label`: what the ticket example trains on. */
export async function writeTrainSplit(source: string, target: string): Promise<number> {
	const rows = readTextDataset(source).filter((e) => e.split === 'train');
	await fs.mkdir(path.dirname(target), { recursive: true });
	await fs.writeFile(target, ['text,label', ...rows.map((e) => `${csvField(e.text)},${csvField(e.label)}`)].join('\n') + '\n');
	return rows.length;
}
