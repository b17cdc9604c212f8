import { promises as dns, type LookupAddress } from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import type { LookupFunction } from 'node:net';
import { addAbortSignal, pipeline, type Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { TransferLearningError, errorMessage } from '../errors';
import { settings } from '../settings';
import { addressPolicy, bareHostname, hostnameVerdict, isBlockedAddress, isIpLiteral, type AddressPolicy, type Trust } from './address-policy';

/** Headers that go to one origin only: never across a redirect elsewhere, never to another host's URL. */
export interface ScopedHeaders {
	origin: string;
	headers: Record<string, string>;
}

export interface FetchOptions {
	/** An image named by item data, or a model file the workflow author or administrator chose. */
	purpose: 'image' | 'model';
	credential?: ScopedHeaders;
	/**
	 * Looks at the content type and the first bytes (at least SNIFF_BYTES unless the body is shorter)
	 * and throws to refuse the response before the rest is downloaded.
	 */
	inspect?: (contentType: string | undefined, head: Buffer) => void;
	/** Name resolution; tests give names addresses without a DNS server. */
	resolve?: (hostname: string, options: { family?: number; hints?: number }) => Promise<LookupAddress[]>;
}

const SNIFF_BYTES = 16;

/** CDNs redirect once or twice; more is a loop or a walk. */
const MAX_REDIRECTS = 5;

interface Purpose {
	trust: Trust;
	url: string;
	server: string;
	maxBytes: number;
	timeoutMs: number;
	sizeSetting: string;
	timeoutSetting: string;
	fix: string;
}

function purposeOf(purpose: FetchOptions['purpose']): Purpose {
	const s = settings();
	return purpose === 'image'
		? {
				trust: 'item',
				url: 'The image URL',
				server: 'The image server',
				maxBytes: s.maxImageBytes,
				timeoutMs: s.imageTimeoutMs,
				sizeSetting: 'TL_IMAGE_MAX_MB',
				timeoutSetting: 'TL_IMAGE_TIMEOUT_S',
				fix: 'Check the image URL',
			}
		: {
				trust: 'operator',
				url: 'The model URL',
				server: 'The model host',
				maxBytes: s.maxDownloadBytes,
				timeoutMs: s.downloadTimeoutMs,
				sizeSetting: 'TL_MAX_DOWNLOAD_MB',
				timeoutSetting: 'TL_DOWNLOAD_TIMEOUT_S',
				fix: 'Check the model URL or TL_MODEL_MIRROR',
			};
}

const ALLOW_HINT =
	'An n8n administrator can allow it with N8N_SSRF_ALLOWED_HOSTNAMES (host names, e.g. images.internal or *.internal) ' +
	'or N8N_SSRF_ALLOWED_IP_RANGES (e.g. 10.1.2.0/24)';

function refuseHost(p: Purpose, hostname: string, redirected: boolean, why: 'address' | 'hostname'): TransferLearningError {
	const how = redirected ? `${p.url} redirected to ${hostname}, which` : `${p.url} points to ${hostname}, which`;
	return why === 'hostname'
		? new TransferLearningError(`${how} is on N8N_SSRF_BLOCKED_HOSTNAMES`, 'Use another host, or ask an n8n administrator to allow it with N8N_SSRF_ALLOWED_HOSTNAMES')
		: // The resolved address is not named: it would tell the caller how internal names resolve.
			new TransferLearningError(`${how} is a private or local address; requests there are blocked`, ALLOW_HINT);
}

/**
 * GETs `url` and returns its body, with every connection made to an address the policy allows:
 * IP literals are checked here, host names in the resolver that the socket connects with (so a
 * name cannot resolve one way for the check and another for the connection), and each redirect
 * hop again. One deadline covers the whole exchange, redirects included; the body is counted
 * while it streams and cut at the size limit.
 */
export async function guardedFetch(url: string, options: FetchOptions): Promise<Buffer> {
	const p = purposeOf(options.purpose);
	const policy = addressPolicy(p.trust);
	let current = parseHttpUrl(url, p);
	const deadline = new AbortController();
	const timer = setTimeout(() => deadline.abort(), p.timeoutMs);
	try {
		for (let hop = 0; ; hop++) {
			if (policy) checkHostname(policy, current, hop > 0, p);
			const response = await get(current, headersFor(current, options.credential), policy && guardedLookup(policy, current, hop > 0, p, options.resolve), deadline.signal);
			const status = response.statusCode ?? 0;
			if (status >= 300 && status < 400 && response.headers.location) {
				response.destroy();
				if (hop === MAX_REDIRECTS) throw new TransferLearningError(`${p.url} ${url} redirected more than ${MAX_REDIRECTS} times`, p.fix);
				current = parseHttpUrl(new URL(response.headers.location, current).href, p, true);
				continue;
			}
			if (status < 200 || status >= 300) {
				response.destroy();
				throw statusError(p, status, current.href);
			}
			return await readBody(response, p, current.href, options.inspect, deadline.signal);
		}
	} catch (error) {
		if (deadline.signal.aborted) {
			throw new TransferLearningError(
				`${p.server} did not send ${current.href} within ${p.timeoutMs / 1000} s`,
				`Use a faster server or a smaller file; an n8n administrator can raise ${p.timeoutSetting}`,
			);
		}
		if (error instanceof TransferLearningError) throw error;
		throw new TransferLearningError(`Could not download ${current.href}: ${errorMessage(error)}`, connectHint(p));
	} finally {
		clearTimeout(timer);
	}
}

function connectHint(p: Purpose): string {
	return p.trust === 'item' ? `${p.fix}, and that its server is reachable from n8n` : 'Check the network, or set TL_MODEL_MIRROR to a folder or server holding the models (offline installs)';
}

function parseHttpUrl(text: string, p: Purpose, redirected = false): URL {
	let url: URL | undefined;
	try {
		url = new URL(text);
	} catch {
		url = undefined;
	}
	if (!url || !['http:', 'https:'].includes(url.protocol)) {
		throw new TransferLearningError(
			redirected ? `${p.url} redirected to "${text}", which is not an http(s) URL` : `"${text}" is not an http(s) URL`,
			redirected ? p.fix : 'Give the URL in full, starting with http:// or https://',
		);
	}
	return url;
}

/** URL parsing has already turned 127.1, 2130706433, 0x7f.0.0.1 and [::ffff:127.0.0.1] into plain addresses. */
function checkHostname(policy: AddressPolicy, url: URL, redirected: boolean, p: Purpose): void {
	const verdict = hostnameVerdict(policy, url.hostname);
	if (verdict === 'blocked') throw refuseHost(p, url.hostname, redirected, 'hostname');
	if (verdict === 'allowed') return;
	// Node connects to an IP literal without calling the resolver, so it is judged here. Names under
	// "localhost" are loopback whatever the resolver says (RFC 6761), and some resolvers fail on them.
	const addresses = isIpLiteral(url.hostname) ? [bareHostname(url.hostname)] : isLocalhostName(url.hostname) ? ['127.0.0.1', '::1'] : [];
	if (addresses.some((a) => isBlockedAddress(policy, a))) throw refuseHost(p, url.hostname, redirected, 'address');
}

function isLocalhostName(hostname: string): boolean {
	return /(^|\.)localhost\.?$/i.test(hostname);
}

/** Resolves like dns.lookup, but fails when any address of the name is blocked. */
function guardedLookup(policy: AddressPolicy, url: URL, redirected: boolean, p: Purpose, resolve = defaultResolve): LookupFunction | undefined {
	if (hostnameVerdict(policy, url.hostname) === 'allowed') return undefined;
	return (hostname, lookupOptions, callback) => {
		const family = lookupOptions.family === 'IPv4' ? 4 : lookupOptions.family === 'IPv6' ? 6 : lookupOptions.family;
		resolve(hostname, { family, hints: lookupOptions.hints })
			.then((addresses) => {
				if (!addresses.length) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
				if (addresses.some((a) => isBlockedAddress(policy, a.address))) throw refuseHost(p, url.hostname, redirected, 'address');
				return addresses;
			})
			.then(
				(addresses) => (lookupOptions.all ? callback(null, addresses) : callback(null, addresses[0].address, addresses[0].family)),
				(error: NodeJS.ErrnoException) => callback(error, lookupOptions.all ? [] : '', 0),
			);
	};
}

const defaultResolve = (hostname: string, options: { family?: number; hints?: number }) =>
	dns.lookup(hostname, { all: true, family: options.family ?? 0, hints: options.hints });

function headersFor(url: URL, credential?: ScopedHeaders): Record<string, string> {
	return credential && url.origin === credential.origin ? { ...credential.headers } : {};
}

function get(url: URL, headers: Record<string, string>, lookup: LookupFunction | undefined, signal: AbortSignal): Promise<http.IncomingMessage> {
	return new Promise((resolve, reject) => {
		const client = url.protocol === 'https:' ? https : http;
		// A fresh connection each time: a pooled one may have been opened under another policy.
		const request = client.get(url, { headers, agent: false, signal, ...(lookup ? { lookup } : {}) }, resolve);
		request.on('error', (error) => reject(error));
	});
}

function statusError(p: Purpose, status: number, url: string): TransferLearningError {
	if (p.trust === 'operator' && (status === 401 || status === 403)) {
		return new TransferLearningError(`${p.server} refused ${url} (HTTP ${status})`, 'Add a Model Host credential with the header or token the host expects');
	}
	return new TransferLearningError(`${p.server} answered HTTP ${status} for ${url}`, p.fix);
}

const DECODERS: Record<string, () => zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress> = {
	gzip: zlib.createGunzip,
	'x-gzip': zlib.createGunzip,
	deflate: zlib.createInflate,
	br: zlib.createBrotliDecompress,
};

async function readBody(response: http.IncomingMessage, p: Purpose, url: string, inspect: FetchOptions['inspect'], signal: AbortSignal): Promise<Buffer> {
	const tooLarge = () =>
		new TransferLearningError(`${url} is larger than ${p.maxBytes / 1024 / 1024} MB, the limit for one file`, `Use a smaller file; an n8n administrator can raise ${p.sizeSetting}`);
	const declared = Number(response.headers['content-length']);
	if (declared > p.maxBytes) {
		response.destroy();
		throw tooLarge();
	}
	const encoding = (response.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
	let body: Readable = response;
	if (encoding !== 'identity') {
		const decoder = DECODERS[encoding];
		if (!decoder) {
			response.destroy();
			throw new TransferLearningError(`${p.server} sent ${url} in an encoding n8n cannot read (${encoding})`, p.fix);
		}
		// The limit counts decoded bytes: a small compressed body can stand for gigabytes.
		body = pipeline(response, decoder(), () => {});
	}
	addAbortSignal(signal, body);
	const chunks: Buffer[] = [];
	let size = 0;
	let inspected = !inspect;
	// Leaving the loop early (a throw) destroys the stream and with it the connection.
	for await (const chunk of body as AsyncIterable<Buffer>) {
		size += chunk.length;
		if (size > p.maxBytes) throw tooLarge();
		chunks.push(chunk);
		if (!inspected && size >= SNIFF_BYTES) {
			inspected = true;
			inspect!(response.headers['content-type'], Buffer.concat(chunks));
		}
	}
	const bytes = Buffer.concat(chunks);
	if (!inspected) inspect!(response.headers['content-type'], bytes);
	return bytes;
}
