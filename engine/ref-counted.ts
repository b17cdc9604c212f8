/**
 * Something a cache shares between callers and may drop while they still use it: `hold` keeps it
 * alive while a run uses it batch after batch, `retire` (the cache dropping it) disposes it only
 * once nobody holds it.
 */
export abstract class RefCounted {
	private users = 0;
	private retired = false;
	private disposed = false;

	/** What `release` frees, for the error a caller of a disposed instance gets. */
	protected abstract readonly kind: string;
	protected abstract release(): void;

	protected assertLive(): void {
		if (this.disposed) throw new Error(`${this.kind} was disposed`);
	}

	hold(): () => void {
		this.assertLive();
		this.users++;
		let released = false;
		return () => {
			if (released) return;
			released = true;
			this.users--;
			this.disposeWhenIdle();
		};
	}

	retire(): void {
		this.retired = true;
		this.disposeWhenIdle();
	}

	private disposeWhenIdle(): void {
		if (!this.retired || this.users > 0) return;
		// A caller handed this instance just before it was retired takes its hold within the same turn
		// of the event loop (`await loadBackbone(...)` then `extractFeatures(...)`); the check waits
		// for that turn to end.
		setImmediate(() => {
			if (this.users === 0) this.dispose();
		});
	}

	dispose(): void {
		if (this.disposed) return;
		this.disposed = true;
		this.release();
	}
}
