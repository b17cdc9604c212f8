/**
 * ONNX Runtime and the ONNX format, loaded only when first used: the engine runs without them where
 * they cannot load (the plain-JS solver, USE Lite on TF.js).
 */
import type * as Ort from 'onnxruntime-node';
import type { onnx } from 'onnx-proto';

let runtime: typeof Ort | undefined;

/** onnxruntime-node ships glibc binaries; on musl (Alpine) or an odd platform this throws, and the next call tries again. */
export function onnxRuntime(): typeof Ort {
	runtime ??= require('onnxruntime-node') as typeof Ort;
	return runtime;
}

/** `graph` as an encoded ONNX model (opset 13), ready for InferenceSession.create. */
export function encodeModel(graph: onnx.IGraphProto): Uint8Array {
	const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
	return onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 8, producerName: 'n8n-nodes-transfer-learning', opsetImport: [{ domain: '', version: 13 }], graph })).finish();
}
