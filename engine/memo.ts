/** Where `sharePromise` keeps its promises: a Map, or an LruCache to bound them. */
interface PromiseCache<K, V> {
	get(key: K): Promise<V> | undefined;
	set(key: K, value: Promise<V>): void;
	delete(key: K): void;
}

/**
 * The promise cached under `key`, or a new one from `create`, cached until it rejects: concurrent
 * callers share one attempt, and a failure is not remembered, so the next caller tries again.
 */
export function sharePromise<K, V>(cache: PromiseCache<K, V>, key: K, create: () => Promise<V>): Promise<V> {
	const cached = cache.get(key);
	if (cached) return cached;
	// A synchronous throw becomes a rejection, which callers handle like any other failure.
	const pending = (async () => create())();
	cache.set(key, pending);
	pending.catch(() => {
		// A newer attempt may sit under the key by now; only this one's entry goes.
		if (cache.get(key) === pending) cache.delete(key);
	});
	return pending;
}
