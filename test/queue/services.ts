/**
 * Throwaway PostgreSQL and Redis servers for the tests: each in a temporary folder, listening on a
 * free loopback port, in a process group of its own, stopped by PID and removed afterwards. The
 * binaries come from Debian's packages (scripts/runtime.sh installs them where it can).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../scripts/n8n-instance';

const run = promisify(execFile);

export interface Service {
	port: number;
	pid: number;
	/** Stops the server and deletes its folder. */
	stop(): Promise<void>;
}

export interface Postgres extends Service {
	/** Superuser `tl`, trusted on loopback: a folder only this test uses. */
	url(database?: string): string;
}

/** PostgreSQL's server binaries: TL_POSTGRES_BIN, else Debian's newest /usr/lib/postgresql/<major>/bin. */
export function postgresBin(): string | undefined {
	if (process.env.TL_POSTGRES_BIN) return process.env.TL_POSTGRES_BIN;
	const root = '/usr/lib/postgresql';
	const majors = existsSync(root) ? readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
	return majors.length ? path.join(root, majors.sort((a, b) => Number(b) - Number(a))[0], 'bin') : undefined;
}

export const POSTGRES_MISSING = 'PostgreSQL is not installed (apt-get install postgresql, or set TL_POSTGRES_BIN to its bin folder); scripts/test.sh installs it when run as root';

/** initdb and postgres refuse to run as root: as root they run as the `postgres` user Debian's package creates. */
async function asServerUser(dir: string): Promise<string[]> {
	if (process.getuid?.() !== 0) return [];
	const { stdout } = await run('id', ['-u', 'postgres']);
	const { stdout: gid } = await run('id', ['-g', 'postgres']);
	await fs.chown(dir, Number(stdout), Number(gid));
	return ['runuser', '-u', 'postgres', '--'];
}

export async function startPostgres(): Promise<Postgres> {
	const bin = postgresBin();
	if (!bin) throw new Error(POSTGRES_MISSING);
	const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tl-postgres-'));
	const prefix = await asServerUser(dir);
	const data = path.join(dir, 'data');
	const command = (file: string, args: string[]) => (prefix.length ? [prefix[0], [...prefix.slice(1), path.join(bin, file), ...args]] : [path.join(bin, file), args]) as [string, string[]];
	await run(...command('initdb', ['-D', data, '-U', 'tl', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']));
	const port = await freePort();
	const server = spawnGroup(...command('postgres', ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200']));
	await waitForLine(server, /database system is ready to accept connections/, 'PostgreSQL');
	return {
		port,
		pid: server.child.pid!,
		url: (database = 'postgres') => `postgres://tl@127.0.0.1:${port}/${database}`,
		// SIGINT is PostgreSQL's fast shutdown: clients are disconnected, nothing waits for them.
		stop: () => server.stop('SIGINT').then(() => fs.rm(dir, { recursive: true, force: true })),
	};
}

export async function startRedis(): Promise<Service> {
	const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tl-redis-'));
	const port = await freePort();
	const server = spawnGroup('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no']);
	await waitForLine(server, /Ready to accept connections/, 'Redis');
	return { port, pid: server.child.pid!, stop: () => server.stop('SIGTERM').then(() => fs.rm(dir, { recursive: true, force: true })) };
}

interface Group {
	child: ChildProcess;
	output: string[];
	exited: Promise<void>;
	stop(signal: NodeJS.Signals): Promise<void>;
}

function spawnGroup(file: string, args: string[]): Group {
	const child = spawn(file, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
	const output: string[] = [];
	const collect = (chunk: Buffer) => output.push(...chunk.toString('utf8').split('\n').filter(Boolean));
	child.stdout!.on('data', collect);
	child.stderr!.on('data', collect);
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	child.once('error', (error) => output.push(String(error)));
	return {
		child,
		output,
		exited,
		async stop(signal) {
			try {
				process.kill(-child.pid!, signal);
			} catch {
				return; // already gone
			}
			const killed = setTimeout(() => {
				try {
					process.kill(-child.pid!, 'SIGKILL');
				} catch {
					// gone meanwhile
				}
			}, 15_000);
			await exited;
			clearTimeout(killed);
		},
	};
}

async function waitForLine(group: Group, ready: RegExp, what: string): Promise<void> {
	let exited = false;
	void group.exited.then(() => (exited = true));
	const deadline = Date.now() + 60_000;
	while (!group.output.some((line) => ready.test(line))) {
		if (exited || Date.now() > deadline) {
			await group.stop('SIGKILL');
			throw new Error(`${what} did not start:\n${group.output.join('\n')}`);
		}
		await new Promise((resolve) => setTimeout(resolve, 100));
	}
}
