/**
 * In n8n's editor, in a real Chromium: what a user sees when looking for the nodes. Run by
 * `npm run test:ui`. Screenshots of every step go to a temporary folder, kept when a step fails.
 */
import { TEMP_DIR } from '../helpers/env';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { existsSync, mkdtempSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, selectors, type Browser, type Page } from 'playwright-core';
import { OWNER, freePort, installPackage, startN8n, type RunningN8n } from '../../scripts/n8n-instance';

const CHROMIUM = process.env.TL_CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOTS = mkdtempSync(path.join(os.tmpdir(), 'tl-ui-screenshots-'));
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
	const userFolder = path.join(TEMP_DIR, 'n8n');
	await installPackage(userFolder);
	n8n = await startN8n({ userFolder, port: await freePort(), brokerPort: await freePort() });
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
	if (failed) console.log(`# screenshots kept in ${SCREENSHOTS}`);
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
