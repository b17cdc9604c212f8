import { setTimeout } from 'node:timers/promises';

/**
 * Watches how long the event loop is held: the gaps between ticks of a short timer are how long an
 * HTTP request or a webhook would have waited. `stop` waits 50 ms first, since a stall shows at the
 * first tick after it.
 */
export function watchEventLoop(intervalMs: number): { stop(): Promise<{ gaps: number[]; maxGapMs: number }> } {
	const gaps: number[] = [];
	let last = performance.now();
	const tick = setInterval(() => {
		const now = performance.now();
		gaps.push(now - last);
		last = now;
	}, intervalMs);
	return {
		async stop() {
			await setTimeout(50);
			clearInterval(tick);
			gaps.push(performance.now() - last);
			return { gaps, maxGapMs: Math.max(...gaps) };
		},
	};
}
