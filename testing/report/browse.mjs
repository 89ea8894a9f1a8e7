// Open a generated phonehome report in headless Chromium (Debian's, driven by playwright-core: no browser
// download), click into a failing test, open its phase step, check the finding and the pcap attachment, and
// record every request the page makes. Any request to a host other than the report's own 127.0.0.1 server is
// recorded, aborted, and fails the run: a privacy tool's report must not phone home.
//
// playwright-core launches Chromium with a fresh temporary profile (its own --user-data-dir) every time.
// The report opens with the verdict per phone (index.html): it is screenshotted with its text, then the failing
// phone's test link is followed into the Allure app, whose test page is screenshotted with its text too.
// usage: node browse.mjs SPEC.json
//   (SPEC: {url, shots, phone, verdictTexts[], test, texts[], step, findings, findingsTexts[], pcap})
// prints one JSON object: {ok, problems[], requests[], offMachine[], pcapMagic, shots: {name: {path, text}}}
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.PHONEHOME_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 15000;
const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const origin = new URL(spec.url).origin;
const requests = [];
const offMachine = [];
const problems = [];
let pcapMagic = null;
const shots = {};
let stage = 'start';

// a screenshot and the text the page shows at that moment (what the test asserts on)
async function shoot(page, name) {
  const path = `${spec.shots}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  shots[name] = { path, text: await page.evaluate(() => document.body.innerText) };
}

function isLocal(url) {
  if (url.startsWith('data:') || url.startsWith('about:')) return true;
  if (url.startsWith('blob:')) return url.slice(5).startsWith(origin + '/');
  return url.startsWith(origin + '/') || url === origin;
}

async function expectText(scope, text, what) {
  try {
    await scope.getByText(text, { exact: false }).first().waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
  } catch {
    problems.push(`${what}: "${text}" not visible`);
  }
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const context = await browser.newContext({ acceptDownloads: true, serviceWorkers: 'block' });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    offMachine.push(url);
    return route.abort('blockedbyclient');
  });
  context.on('request', (request) => requests.push(request.url()));
  const page = await context.newPage();
  await page.goto(spec.url, { waitUntil: 'load' });

  // the opening page: a verdict per phone; then the failing phone's test, through its link
  for (const text of spec.verdictTexts || []) await expectText(page, text, 'verdict page');
  await shoot(page, 'opening');
  stage = 'verdict page link';
  await page.locator(`tr[data-phone="${spec.phone}"] a`).filter({ hasText: spec.testLink }).first().click();
  await page.getByText(spec.test, { exact: true }).first().waitFor({ state: 'visible' });
  for (const text of spec.texts || []) await expectText(page, text, 'test page');
  await shoot(page, 'failing-phone');
  stage = 'phase step';

  // the phase step holds the evidence of that phase (by its title: the error text may quote the same words)
  // (a failed step, one that carries findings, is open already: clicking it again would close it)
  const stepTitle = page.locator('[data-testid="test-result-step-title"]').filter({ hasText: spec.step }).first();
  await stepTitle.waitFor({ state: 'visible' });
  const attachment = (name) => page.locator('[data-testid="test-result-attachment"]')
    .filter({ has: page.getByText(name, { exact: true }) }).first();
  const findings = attachment(spec.findings);
  await page.waitForTimeout(300);
  if (!(await findings.isVisible())) await stepTitle.click();

  // the findings table renders in a sandboxed iframe
  stage = 'findings attachment';
  await findings.getByText(spec.findings, { exact: true }).click();
  const frame = findings.frameLocator('iframe');
  for (const text of spec.findingsTexts || []) await expectText(frame, text, 'findings table');

  // the pcap: listed with its MIME type, and its download button hands over a real capture file
  stage = 'pcap attachment';
  const pcap = attachment(spec.pcap);
  await expectText(pcap, 'application/vnd.tcpdump.pcap', 'pcap attachment');
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: STEP_TIMEOUT_MS }),
    pcap.locator('button').last().click(),
  ]);
  const stream = await download.createReadStream();
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  pcapMagic = Buffer.concat(chunks).subarray(0, 4).toString('hex');
  if (!['0a0d0d0a', 'd4c3b2a1', 'a1b2c3d4', '4d3cb2a1', 'a1b23c4d'].includes(pcapMagic)) {
    problems.push(`pcap download is not a capture file (magic ${pcapMagic})`);
  }
  await page.waitForTimeout(500); // let late requests (fonts, beacons) show themselves
} catch (error) {
  problems.push(`browser (${stage}): ${error.message.split('\n')[0]}`);
} finally {
  await browser.close();
}
if (offMachine.length) problems.push(`requests left the machine: ${offMachine.join(', ')}`);
if (!requests.length) problems.push('no request recorded: the page did not load');
const result = { ok: problems.length === 0, problems, requests, offMachine, pcapMagic, shots };
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);
