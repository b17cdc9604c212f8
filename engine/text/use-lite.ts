import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tfc from '@tensorflow/tfjs-converter';
import { tf, useBackend } from '../runtimes/backend';
import type { TextBackboneSpec } from '../backbones/catalog';
import { fetchModelArtifacts } from '../net/download';
import { TransferLearningError, errorMessage } from '../errors';
import type { TextEncoder, TextLoadOptions } from './encoder';
import { Tokenizer, type Vocabulary } from './tokenizer';

/**
 * Longest input in SentencePiece tokens; longer texts are cut there. The encoder's attention costs
 * grow with the square of the length, and intent sits in the first sentences.
 */
export const MAX_TOKENS = 256;
/** A piece is at most 16 characters: cutting the text here first bounds the tokenizer's work without changing the first MAX_TOKENS tokens. */
const MAX_CHARACTERS = MAX_TOKENS * 16;

/** `npm:<package>@<version>/<file>`: a file of a dependency, found wherever npm installed it. */
function resolvePackageFile(url: string): string {
	const match = /^npm:((?:@[^/@]+\/)?[^/@]+)@[^/]+\/(.+)$/.exec(url);
	if (!match) throw new TransferLearningError(`"${url}" does not name a file of an npm package`);
	const [, name, file] = match;
	let root: string;
	try {
		root = path.dirname(require.resolve(`${name}/package.json`));
	} catch (error) {
		throw new TransferLearningError(`The package ${name}, which holds the text model, is not installed: ${errorMessage(error)}`, 'Reinstall n8n-nodes-transfer-learning');
	}
	return path.join(root, ...file.split('/'));
}

/**
 * Universal Sentence Encoder Lite: a TF.js graph model over SentencePiece ids that gives one
 * 512-value vector per text. The graph takes the batch as a sparse matrix (row, position) -> id.
 */
export class UseLiteEncoder implements TextEncoder {
	readonly dimension = 512;

	private constructor(
		readonly spec: TextBackboneSpec,
		readonly backendName: 'tensorflow' | 'wasm' | 'cpu',
		private readonly model: tfc.GraphModel,
		private readonly tokenizer: Tokenizer,
		private readonly backendChoice: TextLoadOptions['backend'],
	) {}

	static async load(spec: TextBackboneSpec, options: TextLoadOptions = {}): Promise<UseLiteEncoder> {
		const modelFile = resolvePackageFile(spec.url);
		const [artifacts, vocabulary] = await Promise.all([
			fetchModelArtifacts(modelFile),
			fs.readFile(path.join(path.dirname(modelFile), 'vocab.json'), 'utf8').then((text) => JSON.parse(text) as Vocabulary),
		]);
		const backend = await useBackend(options.backend);
		let model: tfc.GraphModel;
		try {
			model = await tfc.loadGraphModel(
				tf.io.fromMemory({
					modelTopology: artifacts.modelJson.modelTopology as tf.io.ModelArtifacts['modelTopology'],
					weightSpecs: artifacts.weightSpecs as tf.io.WeightsManifestEntry[],
					weightData: artifacts.weightData,
					format: 'graph-model',
				}),
			);
		} catch (error) {
			throw new TransferLearningError(`Could not load the text model ${spec.id}: ${errorMessage(error)}`, 'Reinstall n8n-nodes-transfer-learning');
		}
		return new UseLiteEncoder(spec, backend.name, model, new Tokenizer(vocabulary), options.backend);
	}

	/** Ids of a text as the encoder reads it: at most MAX_TOKENS. */
	tokenize(text: string): number[] {
		return this.tokenizer.encode(text.slice(0, MAX_CHARACTERS)).slice(0, MAX_TOKENS);
	}

	async embed(texts: string[]): Promise<Float32Array[]> {
		if (!texts.length) return [];
		const rows = texts.map((text, i) => {
			const ids = this.tokenize(text);
			// A row without ids would shrink the batch the graph infers from the indices.
			if (!ids.length) throw new TransferLearningError(`Text ${i} is empty`, 'Give every item some text');
			return ids;
		});
		const count = rows.reduce((sum, ids) => sum + ids.length, 0);
		const indices = new Int32Array(count * 2);
		const values = new Int32Array(count);
		let at = 0;
		rows.forEach((ids, row) => {
			ids.forEach((id, position) => {
				indices[at * 2] = row;
				indices[at * 2 + 1] = position;
				values[at++] = id;
			});
		});
		// Another node may have switched the process-wide backend since this one loaded.
		await useBackend(this.backendChoice);
		const inputs = { indices: tf.tensor2d(indices, [count, 2], 'int32'), values: tf.tensor1d(values, 'int32') };
		let output: tf.Tensor | undefined;
		try {
			output = (await this.model.executeAsync(inputs)) as tf.Tensor;
			const flat = (await output.data()) as Float32Array;
			return texts.map((_, i) => flat.slice(i * this.dimension, (i + 1) * this.dimension));
		} finally {
			inputs.indices.dispose();
			inputs.values.dispose();
			output?.dispose();
		}
	}

	dispose(): void {
		this.model.dispose();
	}
}
