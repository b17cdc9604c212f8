/**
 * An error a user can act on: `message` says what went wrong, `hint` says what to do about it.
 * The nodes turn it into a NodeOperationError with the hint as its description.
 */
export class TransferLearningError extends Error {
	constructor(
		message: string,
		readonly hint?: string,
	) {
		super(message);
		this.name = 'TransferLearningError';
	}
}

export function errorMessage(error: unknown): string {
	return error instanceof Error ? error.message : String(error);
}
