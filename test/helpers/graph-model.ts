import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/** The 1x1 convolution of RGB into 4 channels that `writeGraphModel` writes: [1,1,3,4], a row per input channel. */
export const GRAPH_KERNEL = Float32Array.from([1, 0, -1, 0.5, 0, 1, 1, -0.5, 0, 0, 1, 0.25]);

/**
 * A one-layer TensorFlow.js graph model written by hand into `dir` (16x16 RGB in, a 1x1 convolution
 * then ReLU, output node `features`); returns its model.json.
 */
export function writeGraphModel(dir: string): string {
	mkdirSync(dir, { recursive: true });
	const dims = (...sizes: number[]) => ({ dim: sizes.map((size) => ({ size: String(size) })) });
	const text = (s: string) => ({ s: Buffer.from(s).toString('base64') });
	writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(GRAPH_KERNEL.buffer));
	const file = path.join(dir, 'model.json');
	writeFileSync(
		file,
		JSON.stringify({
			format: 'graph-model',
			modelTopology: {
				node: [
					{ name: 'image', op: 'Placeholder', attr: { dtype: { type: 'DT_FLOAT' }, shape: { shape: dims(-1, 16, 16, 3) } } },
					{ name: 'kernel', op: 'Const', attr: { dtype: { type: 'DT_FLOAT' }, value: { tensor: { dtype: 'DT_FLOAT', tensorShape: dims(1, 1, 3, 4) } } } },
					{
						name: 'conv',
						op: 'Conv2D',
						input: ['image', 'kernel'],
						attr: { T: { type: 'DT_FLOAT' }, strides: { list: { i: ['1', '1', '1', '1'] } }, padding: text('SAME'), data_format: text('NHWC'), dilations: { list: { i: ['1', '1', '1', '1'] } } },
					},
					{ name: 'features', op: 'Relu', input: ['conv'], attr: { T: { type: 'DT_FLOAT' } } },
				],
				versions: { producer: 1 },
			},
			weightsManifest: [{ paths: ['weights.bin'], weights: [{ name: 'kernel', shape: [1, 1, 3, 4], dtype: 'float32' }] }],
		}),
	);
	return file;
}
