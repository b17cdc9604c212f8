/**
 * `npm start`'s lifecycle with the real n8n: a stop signal, sent to npm or to start.js, leaves no
 * n8n, no task runner and no open port behind; an n8n that dies makes start.js fail and say so.
 * Run by `npm test` and `npm run test:e2e` (needs TL_N8N_BIN from scripts/runtime.sh).
 */
import { MIRROR_DIR, REPO_ROOT, TEMP_DIR } from '../helpers/env';
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { freePort } from '../../scripts/n8n-instance';

const START_JS = path.join(REPO_ROOT, 'dist', 'scripts', 'start.js');
const startFolder = path.join(TEMP_DIR, 'start');
/** Every process a test saw, so that a failing test leaves nothing running. */
const seen = new Set<number>();

interface Launched {
	root: ChildProcess;
	ports: number[];
	exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
	output: () => string;
}

/** Runs start.js directly, or as the `start` script of a throwaway package under the real npm; waits for "n8n is ready". */
async function launch(underNpm: boolean, waitForReady = true): Promise<Launched> {
	const ports = [await freePort(), await freePort()];
	const env = { ...process.env, TL_START_FOLDER: startFolder, N8N_PORT: String(ports[0]), N8N_RUNNERS_BROKER_PORT: String(ports[1]), TL_MODEL_MIRROR: MIRROR_DIR };
	let root: ChildProcess;
	if (underNpm) {
		const packageDir = path.join(TEMP_DIR, 'npm-start');
		await fs.mkdir(packageDir, { recursive: true });
		// `exec` as in package.json's start script: npm signals its script's shell, which passes nothing on.
		const manifest = { name: 'npm-start', private: true, scripts: { start: `exec node ${JSON.stringify(START_JS)}` } };
		await fs.writeFile(path.join(packageDir, 'package.json'), JSON.stringify(manifest));
		root = spawn('npm', ['start', '--silent'], { cwd: packageDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
	} else {
		root = spawn(process.execPath, [START_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
	}
	let output = '';
	root.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
	root.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
	const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => root.once('exit', (code, signal) => resolve({ code, signal })));
	seen.add(root.pid!);
	const launched = { root, ports, exit, output: () => output };
	if (waitForReady) await waitFor('"n8n is ready" from start.js', () => /n8n is ready after/.test(output) || undefined, 240, launched);
	return launched;
}

async function waitFor<T>(what: string, probe: () => T | undefined, seconds: number, launched: Launched): Promise<T> {
	const deadline = Date.now() + seconds * 1000;
	while (Date.now() < deadline) {
		const value = probe();
		if (value !== undefined) return value;
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
	throw new Error(`timed out after ${seconds} s waiting for ${what}; output so far:\n${launched.output().slice(-4000)}`);
}

interface Proc {
	pid: number;
	ppid: number;
	args: string;
}

function processes(): Proc[] {
	return execFileSync('ps', ['-e', '-o', 'pid=,ppid=,args='], { encoding: 'utf8' })
		.split('\n')
		.filter((line) => line.trim())
		.map((line) => {
			const [, pid, ppid, args] = line.match(/^\s*(\d+)\s+(\d+)\s+(.*)$/)!;
			return { pid: Number(pid), ppid: Number(ppid), args };
		});
}

/** start.js, n8n and n8n's task runner, found under `root` once the runner is up. */
async function tree(launched: Launched): Promise<{ start: Proc; n8n: Proc; runner: Proc }> {
	return waitFor(
		'start.js, n8n and the task runner',
		() => {
			const all = processes();
			const below = (pid: number): Proc[] => all.filter((p) => p.ppid === pid).flatMap((p) => [p, ...below(p.pid)]);
			const family = [all.find((p) => p.pid === launched.root.pid)!, ...below(launched.root.pid!)];
			const start = family.find((p) => p.args.includes('dist/scripts/start.js') && /node/.test(p.args.split(' ')[0]));
			const n8n = start && family.find((p) => p.ppid === start.pid && p.args.includes('n8n start'));
			const runner = n8n && family.find((p) => p.ppid === n8n.pid && p.args.includes('task-runner'));
			if (!start || !n8n || !runner) return undefined;
			for (const p of [start, n8n, runner]) seen.add(p.pid);
			return { start, n8n, runner };
		},
		30,
		launched,
	);
}

/** Alive and not a zombie (an orphan's zombie may linger until init reaps it). */
function alive(pid: number): boolean {
	try {
		return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
	} catch {
		return false;
	}
}

function portOpen(port: number): Promise<boolean> {
	return new Promise((resolve) => {
		const socket = net.connect(port, '127.0.0.1');
		socket.once('connect', () => (socket.destroy(), resolve(true)));
		socket.once('error', () => resolve(false));
	});
}

/** Every process of the tree gone within `seconds`, and both ports closed. */
async function assertAllGone(launched: Launched, procs: Proc[], seconds: number): Promise<void> {
	const left = await waitFor('the processes to exit', () => (procs.some((p) => alive(p.pid)) ? undefined : []), seconds, launched).catch(() =>
		procs.filter((p) => alive(p.pid)),
	);
	assert.deepEqual(left, [], `still running:\n${left.map((p) => `${p.pid} ${p.args}`).join('\n')}\n${launched.output().slice(-3000)}`);
	for (const port of launched.ports) assert.equal(await portOpen(port), false, `port ${port} is still open`);
}

after(async () => {
	for (const pid of seen) {
		if (!alive(pid)) continue;
		try {
			process.kill(pid, 'SIGKILL');
		} catch {
			// exited meanwhile
		}
	}
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
});

for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
	test(`${signal} to npm start stops n8n and its task runner`, { timeout: 300_000 }, async () => {
		const launched = await launch(true);
		const { start, n8n, runner } = await tree(launched);
		for (const port of launched.ports) assert.equal(await portOpen(port), true, `n8n listens on ${port}`);
		launched.root.kill(signal);
		await launched.exit;
		await assertAllGone(launched, [start, n8n, runner], 30);
		assert.match(launched.output(), /stopping n8n/);
	});
}

test('SIGHUP to start.js (a closed terminal) stops n8n and exits 0', { timeout: 300_000 }, async () => {
	const launched = await launch(false);
	const { start, n8n, runner } = await tree(launched);
	launched.root.kill('SIGHUP');
	assert.deepEqual(await launched.exit, { code: 0, signal: null });
	await assertAllGone(launched, [start, n8n, runner], 5);
});

test('when n8n dies, start.js stops its task runner, exits 1 and names the cause and the log', { timeout: 300_000 }, async () => {
	const launched = await launch(false);
	const { start, n8n, runner } = await tree(launched);
	process.kill(n8n.pid, 'SIGKILL');
	assert.deepEqual(await launched.exit, { code: 1, signal: null });
	assert.match(launched.output(), new RegExp(`n8n \\(pid ${n8n.pid}\\) was killed by SIGKILL; its output is above and in ${startFolder}/\\.n8n/logs/n8n\\.log`));
	await assertAllGone(launched, [start, n8n, runner], 5);
});

test('when n8n dies while starting, start.js exits 1 at once and says so', { timeout: 300_000 }, async () => {
	const launched = await launch(false, false);
	const n8n = await waitFor('n8n to be spawned', () => processes().find((p) => p.args.includes('n8n start') && p.ppid === launched.root.pid), 120, launched);
	seen.add(n8n.pid);
	process.kill(n8n.pid, 'SIGKILL');
	const exit = await Promise.race([launched.exit, new Promise((resolve) => setTimeout(() => resolve('still running 30 s later'), 30_000))]);
	assert.deepEqual(exit, { code: 1, signal: null }, launched.output().slice(-3000));
	assert.match(launched.output(), /n8n was killed by SIGKILL while starting/);
});
