/**
 * In n8n's editor, in a real Chromium: what a user sees when looking for the nodes, training a
 * model with the Train example and picking it in Classify. Run by `npm run test:ui`. Screenshots
 * of every step go to a temporary folder, kept when a step fails or TL_UI_SCREENSHOTS is set
 * (which names the folder).
 */
import { DATASETS_DIR, MIRROR_DIR, TEMP_DIR, readDataset } from '../helpers/env';
import { serveFolder } from '../helpers/server';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, selectors, type Browser, type Page } from 'playwright-core';
import { EXAMPLE_IDS, OWNER, freePort, importWorkflows, installPackage, prepareExamples, startN8n, type RunningN8n } from '../../scripts/n8n-instance';
import { copyIntoClassFolders } from '../../scripts/dataset';

const CHROMIUM = process.env.TL_CHROMIUM ?? '/usr/bin/chromium';
const KEEP_SCREENSHOTS = Boolean(process.env.TL_UI_SCREENSHOTS);
const SCREENSHOTS = KEEP_SCREENSHOTS ? path.resolve(process.env.TL_UI_SCREENSHOTS!) : mkdtempSync(path.join(os.tmpdir(), 'tl-ui-screenshots-'));
/** A few flower photos a class: the Train example learns them in seconds on MobileNet v1 0.25. */
const TRAINING_IMAGES_PER_CLASS = 10;
let failed = false;
let n8n: RunningN8n;
let browser: Browser;
let page: Page;

async function snap(name: string): Promise<void> {
	await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** Runs a step, keeping a screenshot of the page as it was when the step ended (or failed). */
async function step<T>(name: string, body: () => Promise<T>): Promise<T> {
	try {
		const result = await body();
		await snap(name);
		return result;
	} catch (error) {
		failed = true;
		await snap(`${name}-FAILED`).catch(() => {});
		throw error;
	}
}

before(async () => {
	assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install -y chromium, or set TL_CHROMIUM)`);
	await fs.mkdir(SCREENSHOTS, { recursive: true });
	const userFolder = path.join(TEMP_DIR, 'n8n');
	const trainingFolder = path.join(TEMP_DIR, 'data', 'training-images');
	const perClass = new Map<string, number>();
	const flowers = readDataset(path.join(DATASETS_DIR, 'flowers5'))
		.filter((e) => e.split === 'train')
		.filter((e) => {
			const n = perClass.get(e.label) ?? 0;
			perClass.set(e.label, n + 1);
			return n < TRAINING_IMAGES_PER_CLASS;
		});
	await copyIntoClassFolders(trainingFolder, flowers);
	await installPackage(userFolder);
	const options = { userFolder, port: await freePort(), brokerPort: await freePort(), readableFolders: [path.dirname(trainingFolder)] };
	const examples = await prepareExamples(path.join(TEMP_DIR, 'examples'), trainingFolder);
	await importWorkflows(options, examples.filter((file) => /^[124]-/.test(path.basename(file))));
	n8n = await startN8n(options);
	await n8n.signIn();
	selectors.setTestIdAttribute('data-test-id');
	browser = await chromium.launch({
		executablePath: CHROMIUM,
		// The background-networking flags keep Chromium from calling out: this machine has no internet.
		args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
	});
	page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
	page.setDefaultTimeout(30_000);
	await step('signin', async () => {
		await page.goto(`${n8n.url}signin`);
		await page.getByLabel(/email/i).fill(OWNER.email);
		await page.getByLabel(/password/i).fill(OWNER.password);
		await page.keyboard.press('Enter');
		await page.waitForURL((url) => !url.pathname.startsWith('/signin'));
	});
});

after(async () => {
	await browser?.close();
	await n8n?.stop();
	await fs.rm(TEMP_DIR, { recursive: true, force: true });
	if (failed || KEEP_SCREENSHOTS) console.log(`# screenshots kept in ${SCREENSHOTS}`);
	else await fs.rm(SCREENSHOTS, { recursive: true, force: true });
});

/** An empty workflow with a manual trigger, and the node creator open for the next step. */
async function openNodeCreatorAfterTrigger(): Promise<void> {
	await page.goto(`${n8n.url}workflow/new`);
	// An empty workflow first asks for a trigger; the nodes are offered for the step after it.
	await page.getByTestId('node-creator-plus-button').click();
	await page.getByText('Trigger manually').click();
	await page.keyboard.press('Escape');
	await page.getByTestId('node-creator-plus-button').click();
}

/**
 * Opens the node creator after a manual trigger, as when adding a step, searches it, and returns
 * the node names listed once `expected` shows up or the search has had 10 s to settle.
 */
async function searchNodeCreator(query: string, expected: string): Promise<string[]> {
	await openNodeCreatorAfterTrigger();
	await page.getByPlaceholder('Search nodes...').fill(query);
	const names = page.getByTestId('node-creator-item-name');
	await names.getByText(expected, { exact: true }).first().waitFor({ timeout: 10_000 }).catch(() => {});
	return (await names.allTextContents()).map((t) => t.trim());
}

const searches: [string, string][] = [
	['Classify', 'Classify'],
	['image classification', 'Classify'],
	['Fine-Tune Head', 'Fine-Tune Head'],
	['transfer learning', 'Fine-Tune Head'],
	['Extract Features', 'Extract Features'],
	['embeddings', 'Extract Features'],
];

for (const [query, expected] of searches) {
	test(`the node creator finds "${expected}" when searching "${query}"`, async () => {
		await step(`search-${query.replace(/\W+/g, '-')}`, async () => {
			const names = await searchNodeCreator(query, expected);
			assert.ok(names.includes(expected), `searching "${query}" listed: ${names.join(', ') || 'nothing'}`);
		});
	});
}

test('the nodes are listed under AI > Other AI Nodes > Miscellaneous', async () => {
	await step('browse-ai-miscellaneous', async () => {
		await openNodeCreatorAfterTrigger();
		const names = page.getByTestId('node-creator-item-name');
		for (const level of ['AI', 'Other AI Nodes', 'Miscellaneous']) {
			// Each level slides in over the last; clicking mid-slide lands on the wrong row.
			await page.waitForTimeout(800);
			await names.getByText(level, { exact: true }).filter({ visible: true }).last().dispatchEvent('click');
		}
		await names.getByText('Classify', { exact: true }).waitFor();
		const listed = (await names.allTextContents()).map((t) => t.trim());
		for (const node of ['Classify', 'Extract Features', 'Fine-Tune Head']) assert.ok(listed.includes(node), `Miscellaneous lists: ${listed.join(', ')}`);
	});
});

/** Adds Classify after a manual trigger and leaves its settings open. */
async function addClassify(): Promise<void> {
	await openNodeCreatorAfterTrigger();
	await page.getByPlaceholder('Search nodes...').fill('Classify');
	await page.getByTestId('node-creator-item-name').getByText('Classify', { exact: true }).first().click();
	// Usable as a tool, the node first shows its details, with the tool beside it.
	await page.getByText('Add to workflow').click();
	await page.getByTestId('resource-locator-modelName').waitFor();
}

/** The option labels of the dropdown now open, once `expected` shows up. */
async function dropdownOptions(expected: string): Promise<string[]> {
	const items = page.locator('.el-select-dropdown__item:visible, [role="option"]:visible');
	await items.getByText(expected).first().waitFor({ timeout: 15_000 }).catch(() => {});
	return (await items.allTextContents()).map((t) => t.trim());
}

test('the Train example runs in the editor, and Fine-Tune Head shows its summary and the training report picture', async () => {
	await step('train-workflow', async () => {
		await page.goto(`${n8n.url}workflow/${EXAMPLE_IDS.train}`);
		await page.getByTestId('execute-workflow-button').click();
		await page.getByText(/Workflow executed successfully/i).waitFor({ timeout: 300_000 });
	});
	const output = page.getByTestId('output-panel');
	await step('fine-tune-head-table', async () => {
		await page.getByTestId('canvas-node').filter({ hasText: 'Fine-Tune Head' }).dblclick();
		await output.getByText('Table', { exact: true }).click();
		// The summary leads: the model saved, its version, where.
		for (const column of ['modelName', 'version', 'savedAs', 'accuracy']) await output.getByText(column, { exact: true }).first().waitFor();
		await output.getByText('model "flowers" version 1 in the model store').first().waitFor();
	});
	await step('fine-tune-head-report', async () => {
		await output.getByTestId('radio-button-binary').click();
		await output.getByText('flowers-v1-report.png').waitFor();
		await output.getByTestId('ndv-view-binary-data').first().click();
		const picture = output.locator('img[src*="binary-data"]');
		await picture.waitFor();
		// The browser's image element; this project compiles without the DOM types.
		type Picture = { complete: boolean; naturalWidth: number; naturalHeight: number };
		await page.waitForFunction((img) => (img as unknown as Picture).complete, await picture.elementHandle());
		const size = await picture.evaluate((img) => [(img as unknown as Picture).naturalWidth, (img as unknown as Picture).naturalHeight]);
		assert.deepEqual(size, [1200, 760]);
	});
});

test('Classify lists the trained model with its accuracy and classes, then offers its versions and class names', async () => {
	await step('classify-model-list', async () => {
		await addClassify();
		await page.getByTestId('resource-locator-modelName').getByTestId('rlc-input').click();
		await page.getByTestId('rlc-item').getByText(/^flowers — v1 · [\d.]+% accuracy · 5 classes · \d{4}-\d{2}-\d{2}$/).waitFor();
	});
	await step('classify-versions', async () => {
		await page.getByTestId('rlc-item').first().click();
		await page.getByTestId('parameter-input-modelVersion').click();
		// Each option's text is its name followed by its description.
		const versions = await dropdownOptions('Version 1');
		assert.equal(versions.length, 2, versions.join(' | '));
		assert.match(versions[0], /^Latest/);
		assert.match(versions[1], /^Version 1validation accuracy [\d.]+% · daisy, dandelion, roses, sunflowers, tulips · \d{4}-/);
		await snap('classify-versions-open');
		await page.keyboard.press('Escape');
	});
	await step('classify-class-names', async () => {
		await page.getByTestId('parameter-input-routeByClass').locator('.el-switch, [role="switch"]').first().click();
		await page.getByTestId('parameter-input-classNames').click();
		assert.deepEqual(await dropdownOptions('tulips'), ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']);
		await snap('classify-class-names-open');
		await page.keyboard.press('Escape');
	});
});

test('n8n wraps Classify as a tool for its AI Agent, with the description an agent reads', async () => {
	const response = await n8n.api.get(`${n8n.url}types/nodes.json`);
	assert.equal(response.status, 200);
	const tool = (response.data as { name: string; description: string; outputs: unknown; properties: { name: string; default: unknown }[] }[]).find(
		(type) => type.name === 'n8n-nodes-transfer-learning.classifyTool',
	);
	assert.ok(tool, 'classifyTool listed');
	assert.deepEqual(tool.outputs, ['ai_tool']);
	assert.match(tool.description, /returns its class: `label`/);
	assert.ok(tool.properties.some((p) => p.name === 'toolDescription'), 'the agent-facing description can be edited');
	await step('route-by-class-example', async () => {
		await page.goto(`${n8n.url}workflow/${EXAMPLE_IDS.route}`);
		await page.getByTestId('canvas-node').first().waitFor();
		await page.keyboard.press('Shift+1');
		// Each class output is labelled on the canvas.
		for (const label of ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips', 'unknown']) await page.getByText(label, { exact: true }).first().waitFor();
	});
});

test("n8n's credential test of Model Host sends the header to the Test URL and tells a wrong one apart", async () => {
	// A private model host: the mirror's files, only with the right key.
	const host = await serveFolder(MIRROR_DIR, (_path, req, res) => {
		if (req.headers['x-model-key'] === 'right') return false;
		res.writeHead(401).end('no');
		return true;
	});
	try {
		const data = { headerName: 'X-Model-Key', headerValue: 'right', testUrl: `${host.url}tfjs-models/tfjs/mobilenet_v1_0.25_224/model.json` };
		// As the editor does: the credential is saved, then tested with the values in the form.
		const saved = await n8n.api.post('credentials', { name: 'Model Host', type: 'modelHostApi', data });
		assert.equal(saved.status, 200, JSON.stringify(saved.data));
		const { id } = (saved.data as { data: { id: string } }).data;
		const check = async (headerValue: string) => {
			const response = await n8n.api.post('credentials/test', { credentials: { id, name: 'Model Host', type: 'modelHostApi', data: { ...data, headerValue } } });
			assert.equal(response.status, 200, JSON.stringify(response.data));
			return (response.data as { data: { status: string; message: string } }).data;
		};
		assert.equal((await check('right')).status, 'OK');
		const wrong = await check('wrong');
		assert.equal(wrong.status, 'Error');
		assert.equal(host.requests.at(-1)!.headers['x-model-key'], 'wrong');
	} finally {
		await host.close();
	}
});
