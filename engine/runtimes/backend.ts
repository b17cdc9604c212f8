import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { sharePromise } from '../memo';
import { settings, type BackendChoice } from '../settings';

export type TfjsBackendName = 'tensorflow' | 'wasm' | 'cpu';
export type BackendName = TfjsBackendName | 'onnxruntime';

export interface BackendReport<Name extends BackendName = BackendName> {
	name: Name;
	/** Why a faster backend was passed over, for the output metadata and the log. */
	fallbackReason?: string;
}

let tfjsNodeProbe: string | undefined | null = null;

/**
 * tfjs-node is never a dependency (it downloads libtensorflow at install time, which n8n's installer
 * never runs), but a user who installed it gets it. Any failure to load counts as "not there":
 * a missing module, a missing native library, a musl libc.
 */
function probeTfjsNode(): string | undefined {
	if (tfjsNodeProbe !== null) return tfjsNodeProbe;
	try {
		require('@tensorflow/tfjs-node');
		tfjsNodeProbe = tf.findBackendFactory('tensorflow')
			? undefined
			: '@tensorflow/tfjs-node loaded but registered no backend with this copy of tfjs-core';
	} catch (error) {
		tfjsNodeProbe = `@tensorflow/tfjs-node is not usable: ${(error as Error).message.split('\n')[0]}`;
	}
	return tfjsNodeProbe;
}

let wasmPathsSet = false;
function prepareWasm(): void {
	if (wasmPathsSet) return;
	// The .wasm files sit beside the package's main script; resolving from package.json finds them
	// whatever layout npm (or n8n's shallow installer) produced.
	const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist');
	setWasmPaths(dist + path.sep);
	wasmPathsSet = true;
}

// Importing the wasm backend registers it as TF.js's first choice, and wasm can only start
// asynchronously: a TF.js op run before any backend is set makes TF.js start another wasm module
// (which adds a process listener) and throw "The highest priority backend 'wasm' has not yet been
// initialized", on every op. cpu starts synchronously, so such an op runs there instead, until
// useBackend has made its choice.
if (!tf.getBackend()) void tf.setBackend('cpu');

const started = new Map<TfjsBackendName, Promise<boolean>>();

/** Starts a backend once per process; one that failed is not tried again (each wasm try leaves a process listener behind). */
function start(name: TfjsBackendName): Promise<boolean> {
	return sharePromise(started, name, async () => {
		try {
			if (name === 'wasm') prepareWasm();
			return await tf.setBackend(name);
		} catch {
			return false;
		}
	});
}

async function activate(name: TfjsBackendName): Promise<boolean> {
	if (!(await start(name))) return false;
	if (tf.getBackend() !== name) await tf.setBackend(name);
	return true;
}

type TfjsChoice = Exclude<BackendChoice, 'onnxruntime'>;

const chosen = new Map<TfjsChoice, Promise<BackendReport<TfjsBackendName>>>();

/**
 * Makes the requested TF.js backend current and says which one that is. `auto` (and
 * `onnxruntime`, for what runs on TF.js anyway) prefers tfjs-node, then wasm, then the pure-JS cpu
 * backend. The result is memoised per choice. Await it before any TF.js op.
 */
export async function useBackend(requested: BackendChoice = settings().backend): Promise<BackendReport<TfjsBackendName>> {
	const choice: TfjsChoice = requested === 'onnxruntime' ? 'auto' : requested;
	const report = await sharePromise(chosen, choice, () => chooseBackend(choice));
	// Another node may have switched the process-wide backend since.
	await activate(report.name);
	return report;
}

async function chooseBackend(choice: TfjsChoice): Promise<BackendReport<TfjsBackendName>> {
	const reasons: string[] = [];
	if (choice === 'auto' || choice === 'tensorflow') {
		const problem = probeTfjsNode();
		if (!problem && (await activate('tensorflow'))) return { name: 'tensorflow' };
		reasons.push(problem ?? 'the tensorflow backend failed to initialise');
		if (choice === 'tensorflow') console.warn(`[transfer-learning] ${reasons.join('; ')}; falling back`);
	}
	if (choice !== 'cpu') {
		if (await activate('wasm')) return report('wasm', choice, reasons);
		reasons.push('the wasm backend failed to initialise');
	}
	if (await activate('cpu')) return report('cpu', choice, reasons);
	throw new Error(`No TensorFlow.js backend could be initialised (${reasons.join('; ')})`);
}

function report(name: TfjsBackendName, choice: TfjsChoice, reasons: string[]): BackendReport<TfjsBackendName> {
	// Falling past tfjs-node under `auto` is the normal case, not worth a warning.
	const fallbackReason = choice !== 'auto' && choice !== name ? reasons.join('; ') : undefined;
	if (fallbackReason) console.warn(`[transfer-learning] using ${name}: ${fallbackReason}`);
	return { name, fallbackReason };
}

export { tf };
