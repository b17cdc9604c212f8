import sharp from 'sharp';
import type { ModelManifest } from '../../engine';

/**
 * The training report as one picture: the loss and accuracy curves of the validation-split fit,
 * the confusion matrix with class names, and each class's F1. Drawn as SVG and rasterised with
 * sharp, which the engine already uses for images.
 */
export async function trainingReportPng(manifest: ModelManifest): Promise<Buffer> {
	return sharp(Buffer.from(trainingReportSvg(manifest))).png().toBuffer();
}

const WIDTH = 1200;
const HEIGHT = 760;
const FONT = 'font-family="DejaVu Sans, Arial, Helvetica, sans-serif"';
const TRAIN_COLOUR = '#2f6fb3';
const VALIDATION_COLOUR = '#e67e22';

const escapeXml = (text: string) => text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
const clip = (text: string, length: number) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);
const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : '–');

function text(x: number, y: number, content: string, attributes = ''): string {
	return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${FONT} ${attributes}>${escapeXml(content)}</text>`;
}

export function trainingReportSvg(manifest: ModelManifest): string {
	const { metrics, history } = manifest;
	const heading = `${manifest.name} · version ${manifest.version}`;
	const scored = manifest.evaluatedOn === 'validation' ? `on ${manifest.validationCount} held-out examples` : `on the ${manifest.trainCount} training examples`;
	const solver = manifest.solver?.method === 'lbfgs' ? manifest.solver : undefined;
	// The full-batch solver's history holds one record per regularisation candidate, not epochs.
	const unit = solver ? 'candidate' : 'epoch';
	const chosen = solver ? `L2 ${solver.l2}${solver.l2Normalize ? ', unit-length inputs' : ''}` : `best epoch ${manifest.bestEpoch}`;
	const summary = `accuracy ${fixed(metrics.accuracy, 3)} · macro-F1 ${fixed(metrics.macroF1, 3)} ${scored} · ${manifest.labels.length} classes · ${chosen} · ${manifest.backbone.id}`;
	const parts = [
		`<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}">`,
		`<rect width="${WIDTH}" height="${HEIGHT}" fill="#ffffff"/>`,
		text(30, 42, heading, 'font-size="30" font-weight="bold" fill="#222"'),
		text(30, 72, clip(summary, 120), 'font-size="18" fill="#555"'),
		lineChart({ x: 30, y: 100, width: 520, height: 290 }, 'Loss', history.map((h) => [h.epoch, h.loss]), history.map((h) => [h.epoch, h.validationLoss]), manifest.bestEpoch, unit),
		lineChart({ x: 30, y: 430, width: 520, height: 290 }, 'Accuracy', history.map((h) => [h.epoch, h.accuracy]), history.map((h) => [h.epoch, h.validationAccuracy]), manifest.bestEpoch, unit, [0, 1]),
		confusionMatrix({ x: 620, y: 100, width: 550, height: 400 }, metrics.labels, metrics.confusionMatrix, manifest.evaluatedOn),
		f1Bars({ x: 620, y: 540, width: 550, height: 190 }, metrics.perClass.map((c) => [c.label, c.f1])),
		'</svg>',
	];
	return parts.join('\n');
}

interface Box {
	x: number;
	y: number;
	width: number;
	height: number;
}

type Series = [number, number | undefined][];

function lineChart(box: Box, title: string, train: Series, validation: Series, bestEpoch: number, unit: 'epoch' | 'candidate', fixedRange?: [number, number]): string {
	const inner = { x: box.x + 50, y: box.y + 30, width: box.width - 60, height: box.height - 60 };
	const points = [...train, ...validation].filter((p): p is [number, number] => p[1] !== undefined && Number.isFinite(p[1]));
	const maxEpoch = Math.max(1, ...points.map((p) => p[0]));
	const values = points.map((p) => p[1]);
	const [low, high] = fixedRange ?? [Math.min(0, ...values), Math.max(1e-6, ...values) * 1.05];
	const px = (epoch: number) => inner.x + ((epoch - 1) / Math.max(1, maxEpoch - 1)) * inner.width;
	const py = (value: number) => inner.y + inner.height - ((value - low) / (high - low || 1)) * inner.height;
	const path = (series: Series) =>
		series
			.filter((p): p is [number, number] => p[1] !== undefined && Number.isFinite(p[1]))
			.map((p, k) => `${k ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
			.join(' ');
	const ticks = [low, (low + high) / 2, high];
	const out = [
		text(box.x, box.y + 16, `${title} per ${unit}`, 'font-size="20" font-weight="bold" fill="#222"'),
		`<rect x="${inner.x}" y="${inner.y}" width="${inner.width}" height="${inner.height}" fill="#fafafa" stroke="#ccc"/>`,
		...ticks.map((t) => text(inner.x - 8, py(t) + 5, fixed(t, 2), 'font-size="15" fill="#666" text-anchor="end"')),
		text(inner.x, inner.y + inner.height + 20, '1', 'font-size="15" fill="#666"'),
		text(inner.x + inner.width, inner.y + inner.height + 20, `${unit} ${maxEpoch}`, 'font-size="15" fill="#666" text-anchor="end"'),
	];
	if (bestEpoch >= 1 && bestEpoch <= maxEpoch) {
		out.push(`<line x1="${px(bestEpoch).toFixed(1)}" y1="${inner.y}" x2="${px(bestEpoch).toFixed(1)}" y2="${inner.y + inner.height}" stroke="#999" stroke-dasharray="4 4"/>`);
		out.push(text(px(bestEpoch) - 4, inner.y + inner.height - 6, unit === 'epoch' ? `best epoch ${bestEpoch}` : 'chosen', 'font-size="15" fill="#777" text-anchor="end"'));
	}
	out.push(`<path d="${path(train)}" fill="none" stroke="${TRAIN_COLOUR}" stroke-width="2.5"/>`);
	const hasValidation = validation.some((p) => p[1] !== undefined);
	if (hasValidation) out.push(`<path d="${path(validation)}" fill="none" stroke="${VALIDATION_COLOUR}" stroke-width="2.5"/>`);
	const legendY = box.y + 16;
	out.push(`<rect x="${box.x + box.width - 230}" y="${legendY - 10}" width="14" height="4" fill="${TRAIN_COLOUR}"/>`, text(box.x + box.width - 210, legendY - 4, 'training', 'font-size="16" fill="#444"'));
	if (hasValidation) out.push(`<rect x="${box.x + box.width - 130}" y="${legendY - 10}" width="14" height="4" fill="${VALIDATION_COLOUR}"/>`, text(box.x + box.width - 110, legendY - 4, 'validation', 'font-size="16" fill="#444"'));
	return out.join('\n');
}

/** Rows are the true classes, columns the predicted ones; darker is more examples, the diagonal green. */
function confusionMatrix(box: Box, labels: string[], matrix: number[][], evaluatedOn: string): string {
	const k = labels.length;
	const labelWidth = 130;
	const size = Math.min(box.width - labelWidth, box.height - 60);
	const cell = size / k;
	const left = box.x + labelWidth;
	const top = box.y + 50;
	const max = Math.max(1, ...matrix.flat());
	const showLabels = cell >= 11;
	const showCounts = cell >= 22;
	const out = [
		text(box.x, box.y + 16, `Confusion matrix (${evaluatedOn} examples)`, 'font-size="20" font-weight="bold" fill="#222"'),
		text(left + size / 2, box.y + 40, 'predicted →', 'font-size="16" fill="#666" text-anchor="middle"'),
		text(box.x, top - 8, 'true ↓', 'font-size="16" fill="#666"'),
	];
	matrix.forEach((row, actual) =>
		row.forEach((count, predicted) => {
			const share = count / max;
			const hue = actual === predicted ? '39,174,96' : '192,57,43';
			const x = left + predicted * cell;
			const y = top + actual * cell;
			out.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${cell.toFixed(1)}" height="${cell.toFixed(1)}" fill="rgba(${hue},${count ? (0.15 + 0.85 * share).toFixed(3) : 0})" stroke="#e5e5e5"/>`);
			if (showCounts) out.push(text(x + cell / 2, y + cell / 2 + 5, String(count), `font-size="${Math.min(20, cell / 2.5).toFixed(0)}" text-anchor="middle" fill="${share > 0.6 ? '#fff' : '#333'}"`));
		}),
	);
	if (showLabels) {
		const fontSize = Math.min(16, cell * 0.8).toFixed(0);
		labels.forEach((label, c) => {
			out.push(text(left - 6, top + c * cell + cell / 2 + 4, clip(label, 16), `font-size="${fontSize}" fill="#333" text-anchor="end"`));
			const x = left + c * cell + cell / 2 + 4;
			out.push(text(x, top + size + 8, clip(label, 12), `font-size="${fontSize}" fill="#333" transform="rotate(45 ${x.toFixed(1)} ${(top + size + 8).toFixed(1)})"`));
		});
	}
	return out.join('\n');
}

function f1Bars(box: Box, values: [string, number][]): string {
	const out = [text(box.x, box.y + 16, 'F1 per class', 'font-size="20" font-weight="bold" fill="#222"')];
	// The worst classes are the ones to look at: with many classes only they fit.
	const shown = [...values].sort((a, b) => a[1] - b[1]).slice(0, 8);
	const rowHeight = Math.min(24, (box.height - 30) / Math.max(1, shown.length));
	const barLeft = box.x + 150;
	const barWidth = box.width - 210;
	shown.forEach(([label, f1], k) => {
		const y = box.y + 30 + k * rowHeight;
		out.push(text(barLeft - 8, y + rowHeight * 0.7, clip(label, 18), 'font-size="16" fill="#333" text-anchor="end"'));
		out.push(`<rect x="${barLeft}" y="${(y + 2).toFixed(1)}" width="${(barWidth * Math.max(0, Math.min(1, f1))).toFixed(1)}" height="${(rowHeight - 5).toFixed(1)}" fill="${TRAIN_COLOUR}"/>`);
		out.push(text(barLeft + barWidth * Math.max(0, Math.min(1, f1)) + 6, y + rowHeight * 0.7, fixed(f1, 2), 'font-size="15" fill="#444"'));
	});
	if (values.length > shown.length) out.push(text(box.x, box.y + box.height, `the ${shown.length} lowest of ${values.length} classes`, 'font-size="15" fill="#777"'));
	return out.join('\n');
}
