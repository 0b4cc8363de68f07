// Drives Debian's chromium (headless, through playwright-core) through banger's web console:
// sign in with a one-time login URL, load the dashboard, create a VM through the form, see it
// listed, delete it through the confirmation page, see it gone; create one that starts and
// see the start fail with the daemon's reason on the operation's and the VM's pages (the
// daemon's Firecracker binary does not exist). Saves screenshots.
//
// Also registers a second image through the form and the host-path picker, and follows the
// operation's page to its end; submits the bootstrap form with a bad suite to see its
// error inline (a valid one would build an image, which this test never does); and submits
// the build form, first with a relative host path (refused inline), then with a recipe that
// starts a build, which it cancels from the operation's page.
//
// Usage: node console.mjs LOGIN_URL SCREENSHOT_PNG IMAGE_NAME FILES_DIR
// Run by crates/banger-daemon/tests/web_browser.rs; exits non-zero with a reason on failure.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [loginUrl, screenshot, imageName, filesDir] = process.argv.slice(2);
if (!loginUrl || !screenshot || !imageName || !filesDir) {
  console.error('usage: node console.mjs LOGIN_URL SCREENSHOT_PNG IMAGE_NAME FILES_DIR');
  process.exit(2);
}

// A hung browser must not hang the test suite.
setTimeout(() => {
  console.error('the browser test did not finish within 120 s');
  process.exit(3);
}, 120_000).unref();

const fail = (message) => {
  throw new Error(message);
};

const vmName = 'browser-vm';
const profile = mkdtempSync(join(tmpdir(), 'banger-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.BANGER_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1280, height: 860 },
});

// Anything the page complains about (a CSP violation is reported here) fails the test.
const problems = [];
const page = context.pages()[0] ?? (await context.newPage());
try {
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.setDefaultTimeout(15_000);
  const shot = (suffix) =>
    page.screenshot({ path: screenshot.replace(/\.png$/, `${suffix}.png`), fullPage: true });

  // Sign in: the one-time URL sets the session cookie and lands on the dashboard.
  await page.goto(loginUrl);
  if (new URL(page.url()).pathname !== '/') fail(`login landed on ${page.url()}`);
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  const cards = await page.locator('.card').count();
  if (cards !== 3) fail(`expected 3 capacity cards, saw ${cards}`);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  if (background !== 'rgb(245, 246, 248)') fail(`the stylesheet did not apply (${background})`);
  const scripted = await page.evaluate(() => document.documentElement.dataset.console);
  if (scripted !== 'ready') fail('console.js did not run');
  // The login URL is spent: opening it again is refused.
  const again = await context.request.get(loginUrl, { maxRedirects: 0 });
  if (again.status() !== 401) fail(`a used login URL answered ${again.status()}`);

  // The running operation is listed; its bar moves while the page polls, without a reload.
  const op = page.locator('article.op', { hasText: 'slow' });
  await op.waitFor();
  const bar = op.locator('progress');
  const before = Number(await bar.getAttribute('value'));
  await page.waitForFunction(
    ([el, start]) => el.value > start,
    [await bar.elementHandle(), before],
    { timeout: 10_000 },
  );
  await shot('-operations');
  // Cancel it from its page; the page follows it to the end.
  await op.getByRole('link').first().click();
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.getByText('Cancellation requested.').waitFor();
  await page.locator('h1 .state', { hasText: 'cancelled' }).waitFor({ timeout: 15_000 });
  // Leave at once, inside the moment the finished page would reload itself: the user's
  // navigation must win over that reload.
  await page.getByRole('navigation').getByRole('link', { name: 'Dashboard' }).click();
  await page.waitForURL((u) => u.pathname === '/');
  await page.waitForTimeout(1_000);
  if (new URL(page.url()).pathname !== '/') {
    fail(`the finished operation's page reloaded over the user's click: ${page.url()}`);
  }

  // Mistakes show next to their fields and keep what was typed.
  await page.getByRole('link', { name: 'New VM' }).first().click();
  await page.getByRole('heading', { name: 'New VM' }).waitFor();
  await page.fill('#name', 'Bad_Name');
  await page.fill('#vcpus', '0');
  await page.getByRole('button', { name: 'Create VM' }).click();
  await page.locator('#vcpus-error').waitFor();
  if (!(await page.locator('#name-error').textContent()).includes('lower-case')) {
    fail('no inline error for the name');
  }
  if ((await page.inputValue('#name')) !== 'Bad_Name') fail('the typed name was lost');
  // The refused form answers 400, which the browser logs; anything else is a problem.
  const unexpected = problems.filter((p) => !p.includes('status of 400'));
  if (unexpected.length > 0) fail(`the page reported problems:\n${unexpected.join('\n')}`);
  problems.length = 0;
  await shot('-errors');

  // Create a VM through the form.
  await page.fill('#name', vmName);
  await page.check(`input[name="image"][value="${imageName}"]`);
  await page.fill('#vcpus', '1');
  await page.fill('#memory_mib', '256');
  await page.fill('#disk', '2G');
  await page.fill('#work_disk', '1G');
  // Starting is the default; this one is only recorded.
  if (!(await page.isChecked('input[name="start"]'))) fail('"Start it after creating" is not ticked');
  await page.uncheck('input[name="start"]');
  await shot('-new-vm');
  await page.getByRole('button', { name: 'Create VM' }).click();
  await page.waitForURL((url) => url.pathname === `/vms/${vmName}`);
  await page.getByText('VM created.').waitFor();
  await page.getByRole('heading', { name: vmName }).waitFor();
  await shot('-vm');

  // It is listed on the dashboard.
  await page.getByRole('navigation').getByRole('link', { name: 'Dashboard' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  const row = page.locator('table.list tr', { hasText: vmName });
  await row.waitFor();
  const state = await row.locator('.state').textContent();
  if (state !== 'stopped') fail(`the new VM is ${state}, expected stopped`);
  await page.screenshot({ path: screenshot, fullPage: true });

  // Delete it through the confirmation step.
  await row.getByRole('link', { name: vmName }).click();
  await page.getByRole('link', { name: 'Delete…' }).click();
  await page.waitForURL((url) => url.pathname === `/vms/${vmName}/delete`);
  await page.getByRole('heading', { name: `Delete VM ${vmName}?` }).waitFor();
  await shot('-delete');
  await page.getByRole('button', { name: `Delete ${vmName}` }).click();
  await page.waitForURL((url) => url.pathname === '/');
  await page.getByText(`Deleted VM ${vmName}.`).waitFor();
  if ((await page.locator('table.list tr', { hasText: vmName }).count()) !== 0) {
    fail('the deleted VM is still listed');
  }

  // Create one that starts: this daemon's Firecracker binary does not exist, so the start
  // fails the same way on every machine, and the console shows the daemon's reason.
  const failing = 'browser-start';
  await page.getByRole('navigation').getByRole('link', { name: 'VMs' }).click();
  await page.getByRole('link', { name: 'New VM' }).first().click();
  await page.fill('#name', failing);
  await page.check(`input[name="image"][value="${imageName}"]`);
  await page.fill('#vcpus', '1');
  await page.fill('#memory_mib', '256');
  await page.getByRole('button', { name: 'Create VM' }).click();
  await page.waitForURL((url) => url.pathname.startsWith('/operations/op-'));
  await page.locator('h1 .state', { hasText: 'failed' }).waitFor({ timeout: 15_000 });
  const reason = await page.locator('.error-box').textContent();
  if (!reason.includes('/nonexistent/fc')) fail(`the start failed without the daemon's reason: ${reason}`);
  if (!reason.includes('firecracker_bin')) fail(`the start's failure has no hint: ${reason}`);
  await shot('-start-failed');
  // The operation links to its VM, which is stopped with the same reason and can be started.
  await page.locator('h1').getByRole('link', { name: failing }).click();
  await page.waitForURL((url) => url.pathname === `/vms/${failing}`);
  await page.getByText('Last error').waitFor();
  if (!(await page.locator('.error-box').textContent()).includes('/nonexistent/fc')) {
    fail('the VM page does not say why its start failed');
  }
  const vmState = await page.locator('h1 .state').textContent();
  if (vmState !== 'stopped') fail(`the VM whose start failed is ${vmState}, expected stopped`);
  await page.getByRole('heading', { name: 'Last start' }).waitFor();
  await shot('-vm-failed');
  await page.getByRole('button', { name: 'Start' }).click();
  await page.waitForURL((url) => url.pathname.startsWith('/operations/op-'));
  await page.locator('h1 .state', { hasText: 'failed' }).waitFor({ timeout: 15_000 });
  await page.locator('h1').getByRole('link', { name: failing }).click();
  await page.getByRole('link', { name: 'Delete…' }).click();
  await page.getByRole('button', { name: `Delete ${failing}` }).click();
  await page.getByText(`Deleted VM ${failing}.`).waitFor();

  // Register an image through the form, choosing its files with the picker.
  await page.getByRole('navigation').getByRole('link', { name: 'Images' }).click();
  await page.getByRole('link', { name: 'Register image' }).click();
  await page.fill('#name', 'picked');
  await page.locator('#kernel + a').click();
  await page.getByRole('heading', { name: 'Choose the kernel file' }).waitFor();
  // What was typed travels with the picker (console.js adds it to the link).
  if (new URL(page.url()).searchParams.get('name') !== 'picked') fail('the picker lost the name');
  const picker = new URL(page.url());
  picker.searchParams.set('dir', filesDir);
  await page.goto(picker.toString());
  await shot('-picker');
  await page.getByRole('link', { name: 'vmlinux', exact: true }).click();
  await page.getByRole('heading', { name: 'Register image' }).waitFor();
  if ((await page.inputValue('#kernel')) !== `${filesDir}/vmlinux`) fail('the kernel was not filled');
  if ((await page.inputValue('#name')) !== 'picked') fail('the name was lost');
  await page.fill('#rootfs', `${filesDir}/rootfs.ext4`);
  await page.getByRole('button', { name: 'Register' }).click();
  await page.waitForURL((url) => url.pathname.startsWith('/operations/op-'));
  await page.getByRole('link', { name: 'image picked' }).waitFor();
  await page.getByText('succeeded').first().waitFor();
  await shot('-operation');

  // The bootstrap form: a mistake is shown next to its field, with what was typed kept.
  await page.getByRole('navigation').getByRole('link', { name: 'Images' }).click();
  await page.getByRole('heading', { name: 'Bootstrap an image' }).waitFor();
  if ((await page.inputValue('#suite')) !== 'bookworm') fail('the suite is not bookworm by default');
  await page.fill('#suite', 'Not A Suite');
  await page.getByRole('button', { name: 'Bootstrap', exact: true }).click();
  await page.locator('#suite-error').waitFor();
  const suiteError = await page.locator('#suite-error').textContent();
  if (!suiteError.includes('not a Debian suite name')) fail(`no inline error for the suite: ${suiteError}`);
  if ((await page.inputValue('#suite')) !== 'Not A Suite') fail('the typed suite was lost');
  if ((await page.locator('article.op, [data-op]').count()) !== 0) fail('a refused bootstrap started');
  await shot('-bootstrap-errors');

  // The build form: a relative host path is refused with the reason, what was typed kept; a
  // recipe that needs no host file passes the build service's checks and starts a build,
  // cancelled from its page (the test's daemon runs a stand-in for the build itself).
  await page.getByRole('link', { name: 'Build image' }).click();
  await page.waitForURL((url) => url.pathname === '/new/build');
  await page.getByRole('heading', { name: 'Build image' }).waitFor();
  if (!(await page.inputValue('#recipe')).includes('name = "tools"')) fail('no example recipe');
  const relative = 'name = "browser-built"\n[[file]]\nsrc = "motd"\ndest = "/etc/motd"\n';
  await page.fill('#recipe', relative);
  await page.fill('#base', imageName);
  await page.getByRole('button', { name: 'Build', exact: true }).click();
  await page.locator('#recipe-error').waitFor();
  const recipeError = await page.locator('#recipe-error').textContent();
  if (!recipeError.includes('the web form takes absolute host paths only')) {
    fail(`no inline error for the relative path: ${recipeError}`);
  }
  if ((await page.inputValue('#recipe')) !== relative) fail('the typed recipe was lost');
  if ((await page.inputValue('#base')) !== imageName) fail('the typed base was lost');
  await shot('-build-errors');
  await page.fill('#recipe', 'name = "browser-built"\n\n[[run]]\ncommand = "echo hi >/etc/motd"\n');
  await page.check('input[name="no_cache"]');
  await page.getByRole('button', { name: 'Build', exact: true }).click();
  await page.waitForURL((url) => url.pathname.startsWith('/operations/op-'));
  await page.locator('h1', { hasText: 'Build image' }).waitFor();
  await page.locator('h1', { hasText: 'browser-built' }).waitFor();
  await shot('-build');
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.getByText('Cancellation requested.').waitFor();
  await page.locator('h1 .state', { hasText: 'cancelled' }).waitFor({ timeout: 15_000 });

  // The refused forms answer 400, which the browser logs; anything else is a problem.
  const left = problems.filter((p) => !p.includes('status of 400'));
  if (left.length > 0) fail(`the page reported problems:\n${left.join('\n')}`);
  console.log(`screenshot: ${screenshot}`);
} catch (e) {
  // Say where the browser was and what it showed: that is what debugging needs.
  const text = await page.locator('body').innerText().catch(() => '(no page)');
  console.error(`failed at ${page.url()}:\n${text.slice(0, 2000)}\n${problems.join('\n')}`);
  throw e;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
