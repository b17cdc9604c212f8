/**
 * Requests made for item data (image URLs) and for models, against real servers on loopback: an
 * internal "canary" service counts every connection, and must see none from a refused URL.
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, sample } from './helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import sharp from 'sharp';
import { SSRF_DEFAULT_BLOCKED_IP_RANGES } from '@n8n/config';
import { customBackbone, downloadImage, fetchModelArtifacts, loadBackbone } from '../engine';
import { addressPolicy, hostnameVerdict, isBlockedAddress } from '../engine/net/address-policy';
import { guardedFetch } from '../engine/net/guarded-fetch';
import { N8N_DEFAULT_BLOCKED_IP_RANGES, settings } from '../engine/settings';
import { serveFolder, startCanary, type Canary, type StaticServer } from './helpers/server';

const V1_025 = 'tfjs-models/tfjs/mobilenet_v1_0.25_224';
const photo = sample('cats_vs_dogs', 1)[0];
const photoPath = '/' + path.relative(DATASETS_DIR, photo.file).split(path.sep).join('/');

let canary: Canary;
let images: StaticServer;

before(async () => {
	canary = await startCanary();
	images = await serveFolder(DATASETS_DIR);
});

after(async () => {
	await canary.close();
	await images.close();
});

async function withEnv<T>(vars: Record<string, string | undefined>, run: () => Promise<T>): Promise<T> {
	const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
	const apply = (values: Record<string, string | undefined>) => {
		for (const [k, v] of Object.entries(values)) {
			if (v === undefined) delete process.env[k];
			else process.env[k] = v;
		}
	};
	apply(vars);
	try {
		return await run();
	} finally {
		apply(saved);
	}
}

/** The size of the mirrored model's weight files, as they lie on disk. */
async function weightBytes(): Promise<number> {
	const dir = path.join(MIRROR_DIR, V1_025);
	const shards = (await fs.readdir(dir)).filter((f) => /^group\d+-shard/.test(f));
	return (await Promise.all(shards.map((f) => fs.stat(path.join(dir, f))))).reduce((n, s) => n + s.size, 0);
}

const get = (url: string) =>
	new Promise<number>((resolve, reject) => http.get(url, (res) => res.resume().on('end', () => resolve(res.statusCode ?? 0))).on('error', reject));

/** Every way of writing "this machine" or a private network that URL parsing accepts. */
function hostileUrls(port: number): string[] {
	const loopback = [
		'127.0.0.1',
		'127.1',
		'127.0.1',
		'2130706433',
		'0x7f000001',
		'0x7f.0.0.1',
		'0177.0.0.1',
		'017700000001',
		'127.0.0.1.',
		'[::1]',
		'[0:0:0:0:0:0:0:1]',
		'[::ffff:127.0.0.1]',
		'[::ffff:7f00:1]',
		'[0:0:0:0:0:ffff:127.0.0.1]',
		'[::127.0.0.1]',
		'[64:ff9b::127.0.0.1]',
		'[2002:7f00:1::]',
		'0.0.0.0',
		'0',
		'[::]',
		'localhost',
		'localhost.',
		'LocalHost',
		'images.localhost',
	].map((host) => `http://${host}:${port}/`);
	// Not the canary, but an attempt to connect would hang or reach a real network: the refusal must come first.
	const privateNetworks = ['10.0.0.1', '172.16.5.4', '192.168.1.1', '169.254.169.254', '100.64.0.1', '224.0.0.1', '255.255.255.255', '[fd00::1]', '[fe80::1]', '[::ffff:169.254.169.254]'].map(
		(host) => `http://${host}:${port}/latest/meta-data/`,
	);
	return [...loopback, `https://127.0.0.1:${port}/`, ...privateNetworks];
}

test('the canary is reachable on every loopback form, so a zero count means something', async () => {
	for (const host of ['127.0.0.1', '[::1]', 'localhost', '0.0.0.0', '2130706433', '[::ffff:127.0.0.1]']) {
		canary.reset();
		assert.equal(await get(`http://${host}:${canary.port}/`), 200, host);
		assert.equal(canary.requests, 1, host);
	}
	canary.reset();
});

test('an image URL naming a private or local address, however written, is refused before any connection', async () => {
	for (const url of hostileUrls(canary.port)) {
		canary.reset();
		const started = Date.now();
		await assert.rejects(downloadImage(url), (e: Error & { hint?: string }) => {
			assert.match(e.message, /^The image URL points to .*, which is a private or local address; requests there are blocked$/, url);
			assert.match(e.hint ?? '', /N8N_SSRF_ALLOWED_HOSTNAMES/);
			assert.doesNotMatch(e.message, /secret/);
			return true;
		});
		assert.ok(Date.now() - started < 1000, `${url} refused at once`);
		assert.equal(canary.connections, 0, `${url} reached the canary`);
	}
});

test('a host name is judged by every address it resolves to, and the connection goes to the address judged', async () => {
	const resolveTo = (...addresses: string[]) => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
	for (const addresses of [['127.0.0.1'], ['::1'], ['93.184.215.14', '10.1.2.3'], ['::ffff:192.168.0.1']]) {
		canary.reset();
		await assert.rejects(
			guardedFetch(`http://images.example:${canary.port}/`, { purpose: 'image', resolve: resolveTo(...addresses) }),
			/The image URL points to images\.example, which is a private or local address/,
			addresses.join(),
		);
		assert.equal(canary.connections, 0, addresses.join());
	}
	// Allowed by range: the name exists in no DNS, so a success proves the socket used the resolver's answer.
	await withEnv({ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.1/32' }, async () => {
		const bytes = await guardedFetch(`${images.url.replace('127.0.0.1', 'images.example')}${photoPath.slice(1)}`, { purpose: 'image', resolve: resolveTo('127.0.0.1') });
		assert.deepEqual(bytes, photo.bytes);
	});
});

test('a redirect from an allowed host to a blocked one is refused, hop by hop, and redirects are capped', async () => {
	const targets = [`http://127.0.0.1:${canary.port}/`, `http://[::1]:${canary.port}/`, `http://2130706433:${canary.port}/`, `http://169.254.169.254/latest/meta-data/`];
	const redirector = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		const match = /^\/to\/(\d+)$/.exec(urlPath);
		if (match) return void res.writeHead(302, { location: targets[Number(match[1])] }).end(), true;
		if (urlPath === '/file') return void res.writeHead(302, { location: 'file:///etc/passwd' }).end(), true;
		if (urlPath === '/loop') return void res.writeHead(302, { location: '/loop' }).end(), true;
		if (urlPath === '/photo') return void res.writeHead(301, { location: photoPath }).end(), true;
		return false;
	});
	const allowed = redirector.url.replace('127.0.0.1', 'localhost');
	try {
		await withEnv({ N8N_SSRF_ALLOWED_HOSTNAMES: 'localhost' }, async () => {
			assert.deepEqual(await downloadImage(`${allowed}photo`), photo.bytes, 'a redirect within the allowed host is followed');
			for (let i = 0; i < targets.length; i++) {
				canary.reset();
				await assert.rejects(downloadImage(`${allowed}to/${i}`), /The image URL redirected to .*, which is a private or local address; requests there are blocked/, targets[i]);
				assert.equal(canary.connections, 0, targets[i]);
			}
			await assert.rejects(downloadImage(`${allowed}file`), /redirected to "file:\/\/\/etc\/passwd", which is not an http\(s\) URL/);
			await assert.rejects(downloadImage(`${allowed}loop`), /redirected more than 5 times/);
		});
	} finally {
		await redirector.close();
	}
});

test("n8n's allow and block settings keep their meaning: names, wildcards, trailing dots, ranges", async () => {
	const policy = (vars: Record<string, string>) => withEnv(vars, async () => addressPolicy('item')!);
	const named = await policy({ N8N_SSRF_ALLOWED_HOSTNAMES: ' Images.Internal. , *.cdn.internal' });
	assert.equal(hostnameVerdict(named, 'images.internal'), 'allowed');
	assert.equal(hostnameVerdict(named, 'IMAGES.internal.'), 'allowed');
	assert.equal(hostnameVerdict(named, 'a.b.cdn.internal'), 'allowed');
	assert.equal(hostnameVerdict(named, 'cdn.internal'), 'check addresses', 'a wildcard does not match its apex');
	assert.equal(hostnameVerdict(named, 'evilcdn.internal'), 'check addresses');
	const ranges = await policy({ N8N_SSRF_ALLOWED_IP_RANGES: '10.1.2.0/24, fd00:1::/64' });
	assert.equal(isBlockedAddress(ranges, '10.1.2.3'), false);
	assert.equal(isBlockedAddress(ranges, '::ffff:10.1.2.3'), false, 'the IPv4-mapped form of an allowed address');
	assert.equal(isBlockedAddress(ranges, '10.1.3.3'), true);
	assert.equal(isBlockedAddress(ranges, 'fd00:1::5'), false);
	assert.equal(isBlockedAddress(ranges, 'fd00:2::5'), true);
	assert.equal(isBlockedAddress(ranges, '93.184.215.14'), false, 'a public address');
	assert.equal(isBlockedAddress(ranges, '2606:2800:21f:cb07:6820:80da:af6b:8b2c'), false, 'a public IPv6 address');
	await assert.rejects(policy({ N8N_SSRF_ALLOWED_IP_RANGES: '10.1.2.0/33' }), /N8N_SSRF_ALLOWED_IP_RANGES holds "10\.1\.2\.0\/33", which is not an IP range/);

	// n8n's list syntax: "default" stands for its list; values may come quoted or from a _FILE.
	assert.deepEqual([...SSRF_DEFAULT_BLOCKED_IP_RANGES], N8N_DEFAULT_BLOCKED_IP_RANGES, "the copy of n8n's default list is n8n's");
	const file = path.join(TEMP_DIR, 'blocked-ranges');
	await fs.writeFile(file, 'default, 8.8.8.0/24\n');
	await withEnv({ N8N_SSRF_BLOCKED_IP_RANGES_FILE: file, N8N_SSRF_PROTECTION_ENABLED: '"true"' }, async () => {
		assert.equal(settings().ssrf.enabled, true);
		assert.deepEqual(settings().ssrf.blockedIpRanges, [...N8N_DEFAULT_BLOCKED_IP_RANGES, '8.8.8.0/24']);
		assert.equal(isBlockedAddress(addressPolicy('operator')!, '8.8.8.8'), true);
	});

	// Through real requests: an allowed name or range lets the loopback image server through.
	for (const [vars, url] of [
		[{ N8N_SSRF_ALLOWED_HOSTNAMES: 'localhost' }, images.url.replace('127.0.0.1', 'localhost')],
		[{ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.0/8' }, images.url],
		[{ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.0/8' }, images.url.replace('127.0.0.1', '[::ffff:127.0.0.1]')],
	] as const) {
		await withEnv(vars, async () => assert.deepEqual(await downloadImage(url + photoPath.slice(1)), photo.bytes, `${url} with ${JSON.stringify(vars)}`));
	}
	// A blocked name is refused even where its address would pass.
	await withEnv({ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.0/8', N8N_SSRF_BLOCKED_HOSTNAMES: 'localhost' }, async () => {
		await assert.rejects(downloadImage(images.url.replace('127.0.0.1', 'localhost') + photoPath.slice(1)), /points to localhost, which is on N8N_SSRF_BLOCKED_HOSTNAMES/);
	});
});

test("model downloads follow n8n's SSRF setting: a loopback mirror works while it is off, and is refused while it is on unless allowed", async () => {
	const mirror = await serveFolder(MIRROR_DIR);
	const url = `${mirror.url}${V1_025}/model.json`;
	const shardBytes = await weightBytes();
	try {
		await withEnv({ TL_MODEL_CACHE: path.join(TEMP_DIR, 'cache-ssrf-models') }, async () => {
			assert.equal((await fetchModelArtifacts(url)).weightData.byteLength, shardBytes);
			await fs.rm(process.env.TL_MODEL_CACHE!, { recursive: true, force: true });
			await withEnv({ N8N_SSRF_PROTECTION_ENABLED: 'true' }, async () => {
				await assert.rejects(fetchModelArtifacts(url), /The model URL points to 127\.0\.0\.1, which is a private or local address/);
				await withEnv({ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.1/32' }, async () => assert.ok((await fetchModelArtifacts(url)).weightData.byteLength > 0));
			});
		});
	} finally {
		await mirror.close();
	}
});

/** Runs with the loopback image servers allowed, as an administrator would allow an internal host. */
const allowLoopback = <T>(run: () => Promise<T>) => withEnv({ N8N_SSRF_ALLOWED_IP_RANGES: '127.0.0.1/32' }, run);

test('an image trickling a byte a second stops at the total deadline, not at an idle timeout', async () => {
	const server = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		if (urlPath !== '/trickle') return false;
		res.writeHead(200, { 'content-type': 'image/jpeg' }).write(photo.bytes.subarray(0, 16));
		let at = 16;
		const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write(photo.bytes.subarray(at, ++at))), 1000);
		res.on('close', () => clearInterval(timer));
		return true;
	});
	try {
		await allowLoopback(() =>
			withEnv({ TL_IMAGE_TIMEOUT_S: '2' }, async () => {
				const started = Date.now();
				await assert.rejects(downloadImage(server.url + 'trickle'), /The image server did not send .*trickle within 2 s/);
				const seconds = (Date.now() - started) / 1000;
				assert.ok(seconds >= 1.9 && seconds < 4, `stopped after ${seconds} s`);
			}),
		);
	} finally {
		await server.close();
	}
});

test('an oversize image is cut at the limit while it streams, whatever its headers say', async () => {
	const TWO_GB = 2 * 1024 ** 3;
	let sent = 0;
	const server = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		if (!['/zeros', '/zeros-declared'].includes(urlPath)) return false;
		// A JPEG start, then zeros: it passes the format check and is cut by size alone.
		res.writeHead(200, { 'content-type': 'image/jpeg', ...(urlPath === '/zeros-declared' ? { 'content-length': TWO_GB } : {}) });
		sent = 0;
		const chunk = Buffer.concat([photo.bytes.subarray(0, 16), Buffer.alloc(64 * 1024 - 16)]);
		const pump = () => {
			while (sent < TWO_GB && !res.destroyed) {
				sent += chunk.length;
				if (!res.write(chunk)) return void res.once('drain', pump);
			}
			res.end();
		};
		pump();
		return true;
	});
	try {
		await allowLoopback(() =>
			withEnv({ TL_IMAGE_MAX_MB: '1' }, async () => {
				await assert.rejects(downloadImage(server.url + 'zeros'), /zeros is larger than 1 MB, the limit for one file/);
				assert.ok(sent < 64 * 1024 ** 2, `${sent} bytes left the server before the cut`);
				await assert.rejects(downloadImage(server.url + 'zeros-declared'), /zeros-declared is larger than 1 MB/);
				assert.ok(sent < 64 * 1024 ** 2, `${sent} bytes left the server before the cut`);
			}),
		);
	} finally {
		await server.close();
	}
});

test('content that is not an image is refused before decoding, and never quoted back', async () => {
	const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>internal secret</text></svg>';
	const bodies: Record<string, [string | undefined, Buffer]> = {
		'/page': ['text/html', Buffer.from('<html>internal secret</html>')],
		'/json': ['application/json', Buffer.from('{"token":"internal secret"}')],
		'/pdf': ['application/octet-stream', Buffer.from('%PDF-1.4 internal secret')],
		'/svg': ['image/svg+xml', Buffer.from(svg)],
		'/untyped': [undefined, Buffer.from('internal secret')],
	};
	const formats: Record<string, Buffer> = {
		jpeg: photo.bytes,
		png: await sharp(photo.bytes).png().toBuffer(),
		gif: await sharp(photo.bytes).gif().toBuffer(),
		webp: await sharp(photo.bytes).webp().toBuffer(),
		avif: await sharp(photo.bytes).resize(64).avif().toBuffer(),
		tiff: await sharp(photo.bytes).tiff().toBuffer(),
	};
	const server = await serveFolder(DATASETS_DIR, (urlPath, _req, res) => {
		const format = urlPath.slice(1);
		if (formats[format]) return void res.writeHead(200, { 'content-type': `image/${format}` }).end(formats[format]), true;
		const body = bodies[urlPath];
		if (!body) return false;
		res.writeHead(200, body[0] ? { 'content-type': body[0] } : {}).end(body[1]);
		return true;
	});
	try {
		await allowLoopback(async () => {
			for (const [format, bytes] of Object.entries(formats)) assert.deepEqual(await downloadImage(server.url + format), bytes, format);
			for (const urlPath of Object.keys(bodies)) {
				await assert.rejects(downloadImage(server.url + urlPath.slice(1)), (e: Error & { hint?: string }) => {
					assert.match(e.message, /^The image URL did not return an image/, urlPath);
					assert.match(e.hint ?? '', /JPEG, PNG, GIF, WebP, AVIF\/HEIF or TIFF/);
					assert.doesNotMatch(e.message + e.hint, /secret/, urlPath);
					return true;
				});
			}
		});
	} finally {
		await server.close();
	}
});

test('the Model Host credential goes to the model URL host only: not across a redirect, not to weight files elsewhere', async () => {
	const other = await serveFolder(MIRROR_DIR);
	const modelJson = JSON.parse(await fs.readFile(path.join(MIRROR_DIR, V1_025, 'model.json'), 'utf8'));
	// Every weight file named by an absolute URL on the other server (same address, other port).
	for (const group of modelJson.weightsManifest) group.paths = group.paths.map((p: string) => `${other.url}${V1_025}/${p}`);
	const host = await serveFolder(MIRROR_DIR, (urlPath, req, res) => {
		if (req.headers['x-api-key'] !== 'secret') return void res.writeHead(401).end(), true;
		if (urlPath.startsWith('/moved/')) return void res.writeHead(302, { location: `${other.url}${V1_025}/${path.posix.basename(urlPath)}` }).end(), true;
		if (urlPath === '/absolute/model.json') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(modelJson)), true;
		return false;
	});
	const auth = { headerName: 'X-API-Key', headerValue: 'secret' };
	try {
		await withEnv({ TL_MODEL_CACHE: path.join(TEMP_DIR, 'cache-credential-scope') }, async () => {
			const artifacts = await fetchModelArtifacts(`${host.url}moved/model.json`, auth);
			assert.equal(artifacts.weightData.byteLength, await weightBytes());
			assert.ok(host.requests.length > 0 && host.requests.every((r) => r.headers['x-api-key'] === 'secret'));
			assert.ok(other.requests.length > 0, 'the redirects were followed to the other server');
			assert.deepEqual(other.requests.filter((r) => 'x-api-key' in r.headers).map((r) => r.path), [], 'the credential reached the other server');

			// Weight files named by absolute URLs are refused outright, before any of them is fetched.
			other.requests.length = 0;
			await assert.rejects(fetchModelArtifacts(`${host.url}absolute/model.json`, auth), /names the weight file "http:.*", which names a scheme/);
			assert.equal(other.requests.length, 0);
		});
	} finally {
		await host.close();
		await other.close();
	}
});

test('a private model fetched with a credential is not served, from disk or memory, to a caller without it', async () => {
	const host = await serveFolder(MIRROR_DIR, (_path, req, res) => {
		if (req.headers['x-api-key'] === 'secret') return false;
		res.writeHead(401).end();
		return true;
	});
	const url = `${host.url}${V1_025}/model.json`;
	const auth = { headerName: 'X-API-Key', headerValue: 'secret' };
	try {
		await withEnv({ TL_MODEL_CACHE: path.join(TEMP_DIR, 'cache-credential-keyed') }, async () => {
			assert.equal((await fetchModelArtifacts(url, auth)).weightData.byteLength, await weightBytes());
			for (const other of [undefined, { headerName: 'X-API-Key', headerValue: 'guess' }]) {
				await assert.rejects(fetchModelArtifacts(url, other), /refused .*model\.json \(HTTP 401\)/, `disk cache, ${other?.headerValue ?? 'no credential'}`);
			}
			host.requests.length = 0;
			await fetchModelArtifacts(url, auth);
			assert.equal(host.requests.length, 0, 'the same credential is served from the cache');

			const spec = customBackbone({ url, featureLayer: 'conv_pw_13_relu' });
			const backbone = await loadBackbone(spec, { auth });
			await assert.rejects(loadBackbone(spec), /HTTP 401/, 'memory cache, no credential');
			assert.equal(await loadBackbone(spec, { auth }), backbone);
		});
	} finally {
		await host.close();
	}
});
