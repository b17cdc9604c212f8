/**
 * The engine behind the nodes; it knows nothing of n8n. Typical use:
 *
 *   const backbone = await loadBackbone(catalogBackbone('mobilenet_v2_1.00_224'));
 *   const features = await extractFeatures(backbone, imageBuffers);
 *   const trained = await trainHead(features, labels);
 *   await saveTrainedModel(new ModelStore(), 'parcels', trained, backbone.spec, { resizeMode: 'centreCrop', l2Normalize: false });
 *   classify((await new ModelStore().load('parcels')).head, moreFeatures);
 */
import type { Precision } from './backbones/backbone';
import type { BackboneSpec } from './backbones/catalog';
import type { TrainingResult } from './head/head';
import { IMAGE_VIEWS, type ResizeMode } from './inputs/image';
import { MODEL_FORMAT, MODEL_FORMAT_VERSION, type TrainedModel } from './store/model';
import type { ModelStore } from './store';
import { version as packageVersion } from '../package.json';

export { useBackend, type BackendReport, type BackendName } from './runtimes/backend';
export { Backbone, type Int8Parity, type Precision } from './backbones/backbone';
export { shortTitle } from './backbones/availability';
export * from './backbones/catalog';
export { classify, UNKNOWN_LABEL, type Prediction } from './head/classifier';
export { applyMirror, downloadImage, fetchModelArtifacts, type HostAuth, type ModelArtifacts } from './net/download';
export { TransferLearningError, errorMessage, redactPaths } from './errors';
export { extractFeatures, l2Normalize, loadBackbone } from './backbones/features';
export { DEFAULT_TRAINING, trainHead, predictHead, type TrainingOptions, type TrainingProgress, type TrainingResult, type Head } from './head/head';
export { decodeImage, IMAGE_VIEWS, type ResizeMode } from './inputs/image';
export { LruCache } from './lru';
export { computeMetrics, type Metrics } from './head/metrics';
export {
	describeBackbone,
	describeFeatureSource,
	exportModel,
	featureSourceKey,
	featureSourceMismatch,
	featureSourceOf,
	importModel,
	labelProblem,
	parseFeatureSource,
	type FeatureSource,
	type ModelManifest,
	type TrainedModel,
} from './store/model';
export type { LocalFileAccess } from './inputs/paths';
export { classifyViews, extractViewFeatures } from './inputs/views';
export { ModelStore, type VersionRef } from './store';
export { settings, type BackendChoice, type PrecisionChoice } from './settings';
export { embedTexts, loadTextEncoder, SharedTextEncoder, type TextEncoder, type TextLoadOptions } from './text/encoder';
export { hubRepoProblem } from './text/hf-files';
export { MAX_TOKENS as MAX_TEXT_TOKENS } from './text/use-lite';
export { tf } from './runtimes/backend';

/** Turns a training result into the next version of `name` in the store. */
export async function saveTrainedModel(
	store: ModelStore,
	name: string,
	trained: TrainingResult,
	backbone: BackboneSpec,
	preprocessing: { resizeMode?: ResizeMode; l2Normalize: boolean; precision?: Precision },
): Promise<TrainedModel> {
	const manifest = await store.save(name, {
		manifest: {
			format: MODEL_FORMAT,
			formatVersion: MODEL_FORMAT_VERSION,
			createdAt: new Date().toISOString(),
			packageVersion,
			backbone,
			...(preprocessing.resizeMode ? { resizeMode: preprocessing.resizeMode } : {}),
			// The solver may have chosen unit-length inputs; Classify then normalises too.
			l2Normalize: preprocessing.l2Normalize || (trained.head.l2Normalize ?? false),
			...(preprocessing.precision ? { precision: preprocessing.precision } : {}),
			labels: trained.head.labels,
			featureSize: trained.head.featureSize,
			metrics: trained.metrics,
			evaluatedOn: trained.evaluatedOn,
			history: trained.history,
			bestEpoch: trained.bestEpoch,
			trainingOptions: trained.options,
			examplesPerClass: trained.examplesPerClass,
			trainCount: trained.trainCount,
			validationCount: trained.validationCount,
			finalTrainCount: trained.finalTrainCount,
			finalEpochs: trained.finalEpochs,
			solver: trained.solver,
			...(trained.viewsPerExample ? { augmentation: { views: [...IMAGE_VIEWS] } } : {}),
		},
		head: trained.head,
	});
	return { manifest, head: trained.head };
}
