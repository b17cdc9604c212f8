import { createReadStream, promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

export interface StaticServer {
	url: string;
	requests: { path: string; headers: http.IncomingHttpHeaders }[];
	close(): Promise<void>;
}

/**
 * Serves a folder on loopback, like a model host or mirror would. `override` can answer a path
 * differently (a corrupt or truncated file, an error status) to test how downloads fail.
 */
export async function serveFolder(
	root: string,
	override?: (urlPath: string, req: http.IncomingMessage, res: http.ServerResponse) => boolean,
	/** Any loopback address: a test can allow one (127.0.0.2) and keep the others blocked. */
	host = '127.0.0.1',
): Promise<StaticServer> {
	const requests: StaticServer['requests'] = [];
	const server = http.createServer(async (req, res) => {
		const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
		requests.push({ path: urlPath, headers: req.headers });
		if (override?.(urlPath, req, res)) return;
		const file = path.join(root, path.normalize(urlPath).replace(/^([/\\])+/, ''));
		if (!file.startsWith(root)) return void res.writeHead(403).end();
		const stat = await fs.stat(file).catch(() => undefined);
		if (!stat?.isFile()) return void res.writeHead(404).end('not found');
		res.writeHead(200, { 'content-length': stat.size, 'content-type': 'application/octet-stream' });
		createReadStream(file).pipe(res);
	});
	await new Promise<void>((resolve) => server.listen(0, host, resolve));
	const { port } = server.address() as AddressInfo;
	return {
		url: `http://${host}:${port}/`,
		requests,
		// Clients keep connections alive; close them too rather than wait for their timeout.
		close: () =>
			new Promise((resolve) => {
				server.close(() => resolve());
				server.closeAllConnections();
			}),
	};
}

export interface Canary {
	port: number;
	/** Connections accepted and requests answered since the last reset. */
	connections: number;
	requests: number;
	reset(): void;
	close(): Promise<void>;
}

/**
 * An internal service that must never be reached: it listens on every loopback address (IPv4 and
 * IPv6, one port) and counts connections as well as requests, so that a refusal is seen to come
 * before any connection.
 */
export async function startCanary(): Promise<Canary> {
	const server = http.createServer((_req, res) => {
		canary.requests++;
		res.writeHead(200, { 'content-type': 'text/plain' }).end('internal secret');
	});
	server.on('connection', () => canary.connections++);
	await new Promise<void>((resolve) => server.listen(0, '::', resolve));
	const canary: Canary = {
		port: (server.address() as AddressInfo).port,
		connections: 0,
		requests: 0,
		reset() {
			canary.connections = 0;
			canary.requests = 0;
		},
		close: () =>
			new Promise((resolve) => {
				server.close(() => resolve());
				server.closeAllConnections();
			}),
	};
	return canary;
}
