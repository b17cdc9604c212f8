/** A small least-recently-used map; `onEvict` releases what falls out. */
export class LruCache<K, V> {
	private readonly entries = new Map<K, V>();

	constructor(
		private readonly capacity: number,
		private readonly onEvict: (value: V) => void = () => {},
	) {}

	get(key: K): V | undefined {
		const value = this.entries.get(key);
		if (value !== undefined) {
			this.entries.delete(key);
			this.entries.set(key, value);
		}
		return value;
	}

	set(key: K, value: V): void {
		this.entries.delete(key);
		this.entries.set(key, value);
		while (this.entries.size > this.capacity) {
			const [oldest, evicted] = this.entries.entries().next().value as [K, V];
			this.entries.delete(oldest);
			this.onEvict(evicted);
		}
	}

	delete(key: K): void {
		this.entries.delete(key);
	}
}
