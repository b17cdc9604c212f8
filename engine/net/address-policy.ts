import * as ipaddr from 'ipaddr.js';
import { isIP } from 'node:net';
import { TransferLearningError } from '../errors';
import { N8N_DEFAULT_BLOCKED_IP_RANGES, settings, type SsrfSettings } from '../settings';

/**
 * Who chose the URL. `item`: item data (a webhook body, a spreadsheet row), so anyone who can reach
 * the workflow: private and local addresses are refused whatever n8n's SSRF setting. `operator`:
 * a model URL or mirror set by the workflow author or the administrator: checked only when n8n's
 * own SSRF protection is on, as n8n's HTTP Request node would be.
 */
export type Trust = 'item' | 'operator';

type Cidr = [ipaddr.IPv4 | ipaddr.IPv6, number];

/** Nothing a public image server answers from, on top of n8n's defaults. */
const ITEM_BLOCKED_IP_RANGES = [
	'100.64.0.0/10', // carrier-grade NAT: the provider's own network
	'224.0.0.0/4', // multicast
	'240.0.0.0/4', // reserved, and 255.255.255.255
	'192.88.99.0/24', // 6to4 relays
	'::/128', // unspecified: connects to this machine
	'ff00::/8', // multicast
	'100::/64', // discard-only
	'2001:db8::/32', // documentation
	'64:ff9b:1::/48', // local-use NAT64: an internal network by definition
];

/** As n8n matches N8N_SSRF_*_HOSTNAMES: case and a trailing dot ignored, `*.x` matches below x only. */
class HostnameMatcher {
	private readonly patterns: string[];

	constructor(patterns: string[]) {
		this.patterns = patterns.map(normaliseHostname).filter(Boolean);
	}

	matches(hostname: string): boolean {
		const name = normaliseHostname(hostname);
		return this.patterns.some((p) => (p.startsWith('*.') ? name.endsWith(p.slice(1)) && name.length > p.length - 1 : name === p));
	}
}

function normaliseHostname(hostname: string): string {
	return hostname.trim().toLowerCase().replace(/\.$/, '');
}

export interface AddressPolicy {
	allowedHostnames: HostnameMatcher;
	blockedHostnames: HostnameMatcher;
	allowedRanges: Cidr[];
	blockedRanges: Cidr[];
}

function parseRanges(entries: string[], variable: string): Cidr[] {
	return entries.map((entry) => {
		try {
			return ipaddr.parseCIDR(entry);
		} catch {
			// n8n skips such an entry with a warning; a typo in a security list must not pass silently here.
			throw new TransferLearningError(
				`${variable} holds "${entry}", which is not an IP range`,
				`Write IP ranges in CIDR notation, separated by commas, e.g. 10.1.2.0/24,fd00:1::/64`,
			);
		}
	});
}

/** The checks for a request, or undefined when none apply (operator URLs with n8n's protection off). */
export function addressPolicy(trust: Trust, ssrf: SsrfSettings = settings().ssrf): AddressPolicy | undefined {
	if (trust === 'operator' && !ssrf.enabled) return undefined;
	const blocked = trust === 'item' ? [...new Set([...N8N_DEFAULT_BLOCKED_IP_RANGES, ...ITEM_BLOCKED_IP_RANGES, ...ssrf.blockedIpRanges])] : ssrf.blockedIpRanges;
	return {
		allowedHostnames: new HostnameMatcher(ssrf.allowedHostnames),
		blockedHostnames: new HostnameMatcher(ssrf.blockedHostnames),
		allowedRanges: parseRanges(ssrf.allowedIpRanges, 'N8N_SSRF_ALLOWED_IP_RANGES'),
		blockedRanges: parseRanges(blocked, 'N8N_SSRF_BLOCKED_IP_RANGES'),
	};
}

/** What the host name alone decides, before any address is looked at. */
export function hostnameVerdict(policy: AddressPolicy, hostname: string): 'allowed' | 'blocked' | 'check addresses' {
	if (policy.allowedHostnames.matches(hostname)) return 'allowed';
	return policy.blockedHostnames.matches(hostname) ? 'blocked' : 'check addresses';
}

/** A URL's hostname without the brackets of an IPv6 literal. */
export function bareHostname(hostname: string): string {
	return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

export function isIpLiteral(hostname: string): boolean {
	return isIP(bareHostname(hostname)) !== 0;
}

const inRange = (address: ipaddr.IPv4 | ipaddr.IPv6, ranges: Cidr[]) =>
	ranges.some(([network, bits]) => network.kind() === address.kind() && address.match(network, bits));

const NAT64 = ipaddr.parseCIDR('64:ff9b::/96');
const IPV4_COMPATIBLE = ipaddr.parseCIDR('::/96');
const IPV4_TRANSLATED = ipaddr.parseCIDR('::ffff:0:0:0/96');
const SIX_TO_FOUR = ipaddr.parseCIDR('2002::/16');

/** The IPv4 address an IPv6 one stands for (mapped, compatible, translated, NAT64, 6to4), if any. */
function embeddedIPv4(address: ipaddr.IPv6): ipaddr.IPv4 | undefined {
	if (address.isIPv4MappedAddress()) return address.toIPv4Address();
	const p = address.parts;
	const v4 = (high: number, low: number) => new ipaddr.IPv4([high >> 8, high & 255, low >> 8, low & 255]);
	if ([NAT64, IPV4_COMPATIBLE, IPV4_TRANSLATED].some((range) => address.match(range))) return v4(p[6], p[7]);
	if (address.match(SIX_TO_FOUR)) return v4(p[1], p[2]);
	return undefined;
}

/**
 * Whether a connection to `address` (an IP as the resolver or URL gives it) is refused: an allowed
 * range lets it through (n8n's order), else any blocked range stops it. An IPv6 address that
 * carries an IPv4 one is judged as both.
 */
export function isBlockedAddress(policy: AddressPolicy, address: string): boolean {
	const parsed = ipaddr.parse(address);
	const embedded = parsed.kind() === 'ipv6' ? embeddedIPv4(parsed as ipaddr.IPv6) : undefined;
	const forms = embedded ? [parsed, embedded] : [parsed];
	if (forms.some((f) => inRange(f, policy.allowedRanges))) return false;
	return forms.some((f) => inRange(f, policy.blockedRanges));
}
