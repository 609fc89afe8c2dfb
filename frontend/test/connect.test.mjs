// Browser test: <whatsapp-connect> in headless Chromium against the real gateway, the
// extension and graph-sim. The stand-in SDK (fake-fb-sdk.js) plays the Embedded Signup
// popup; everything after it is real: gateway → wa.complete_signup → graph-sim.
//
// Environment (test/run.sh sets it):
//   WA_GATEWAY_BIN       the whatsapp-gateway binary
//   GRAPH_SIM_BIN        the graph-sim binary
//   WA_GATEWAY_TEST_DSN  superuser DSN (key=value) of a throwaway cluster with whatsapp_pg
//                        preloaded; this test points its wa.graph_api_url at graph-sim
//   CHROMIUM             browser executable (default /usr/bin/chromium)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FRONTEND = path.resolve(HERE, '..');
const ARTIFACTS = path.join(HERE, 'artifacts');

const APP_ID = '1234567890123456';
const APP_SECRET = 'browser-test-app-secret';
const VERIFY_TOKEN = 'browser-test-verify-token';
const CONFIG_ID = '555000111222333';
const GATEWAY_ROLE = 'wa_gateway_test';

function requireEnv(name, fallback) {
  const v = process.env[name] || fallback;
  if (!v) throw new Error(`${name} is not set (run frontend/test/run.sh)`);
  return v;
}

const GATEWAY_BIN = requireEnv('WA_GATEWAY_BIN');
const SIM_BIN = requireEnv('GRAPH_SIM_BIN');
const BASE_DSN = requireEnv('WA_GATEWAY_TEST_DSN', 'host=127.0.0.1 port=55434 user=postgres dbname=postgres');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DB = `gw_browser_${process.pid}`;

function psql(dsn, sql) {
  return execFileSync('psql', [dsn, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
  }).trim();
}
const psqlAdmin = (sql) => psql(BASE_DSN, sql);
const psqlDb = (sql) => psql(`${BASE_DSN} dbname=${DB}`, sql);
const sqlLiteral = (s) => `'${String(s).replace(/'/g, "''")}'`;

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

// Starts a process and resolves with the first output line matching `re` (its match).
function startProcess(name, bin, args, env, re, stream = 'stdout') {
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${logs.join('\n')}`)), 30000);
    for (const s of ['stdout', 'stderr']) {
      readline.createInterface({ input: child[s] }).on('line', (line) => {
        logs.push(line);
        const m = s === stream && line.match(re);
        if (m) {
          clearTimeout(timer);
          resolve(m);
        }
      });
    }
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code}:\n${logs.join('\n')}`));
    });
  });
  return { child, ready, logs };
}

async function stopProcess(p) {
  if (!p || p.child.exitCode !== null) return p?.child.exitCode;
  const exited = once(p.child, 'exit');
  p.child.kill('SIGTERM');
  const [code] = await exited;
  return code;
}

let sim;
let simUrl;
let gateway;
let gatewayUrl;
let context;
let userDataDir;
const mintedStates = [];

async function simSignup(spec = {}) {
  const res = await fetch(`${simUrl}/_sim/signups`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(spec),
  });
  assert.equal(res.status, 200);
  return res.json();
}

function newTenant(name) {
  const tenant = psqlDb(`SELECT wa.create_tenant(${sqlLiteral(name)})`);
  // What the host app does: a one-time state for the tenant, minted in the database.
  const state = psqlDb(`SELECT wa.begin_signup(${sqlLiteral(tenant)}::uuid)->>'state'`);
  mintedStates.push(state);
  return { tenant, state };
}

function connectionStatus(tenant) {
  return JSON.parse(psqlDb(`SELECT wa.connection_status(${sqlLiteral(tenant)}::uuid)`));
}

async function openConnectPage(state) {
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  await page.goto(`${gatewayUrl}/connect?state=${encodeURIComponent(state)}`);
  const host = page.locator('whatsapp-connect');
  await host.and(page.locator('[data-status="ready"]')).waitFor({ timeout: 15000 });
  return { page, host, consoleErrors };
}

async function clickAndWait(page, host, scenario, finalStatuses) {
  await page.evaluate((s) => {
    window.FAKE_FB = s;
  }, scenario);
  const button = host.getByRole('button', { name: 'Connect WhatsApp' });
  await button.click();
  await page.waitForFunction(
    (wanted) => wanted.includes(document.querySelector('whatsapp-connect')?.dataset.status),
    finalStatuses,
    { timeout: 30000 },
  );
  const status = host.getByRole('status');
  return {
    flow: await host.getAttribute('data-status'),
    text: (await status.textContent()).trim(),
    busy: await host.getAttribute('aria-busy'),
  };
}

describe('<whatsapp-connect> in Chromium against the gateway and graph-sim', () => {
  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });

    sim = startProcess(
      'graph-sim',
      SIM_BIN,
      ['--listen', '127.0.0.1:0', '--app-id', APP_ID, '--app-secret', APP_SECRET, '--no-webhooks', '--worker-threads', '1'],
      {},
      /listening on (http:\/\/\S+)/,
    );
    simUrl = (await sim.ready)[1];

    psqlAdmin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    psqlAdmin(`CREATE DATABASE ${DB}`);
    psqlDb('CREATE EXTENSION whatsapp_pg');
    psqlDb(`SELECT pg_advisory_lock(4243);
      DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${GATEWAY_ROLE}') THEN
          CREATE ROLE ${GATEWAY_ROLE} LOGIN IN ROLE wa_admin;
        END IF;
      END $$;
      SELECT pg_advisory_unlock(4243);`);
    psqlDb(`GRANT CONNECT ON DATABASE ${DB} TO ${GATEWAY_ROLE}`);
    psqlDb(`SELECT wa.configure_app('${APP_ID}', '${APP_SECRET}', '${VERIFY_TOKEN}', '${CONFIG_ID}')`);
    // wa.graph_api_url is cluster-wide (sighup): this is why the cluster must be a throwaway.
    psqlAdmin(`ALTER SYSTEM SET wa.graph_api_url = ${sqlLiteral(simUrl)}`);
    psqlAdmin('SELECT pg_reload_conf()');
    for (let i = 0; ; i++) {
      if (psqlAdmin("SELECT current_setting('wa.graph_api_url', true)") === simUrl) break;
      if (i > 200) throw new Error('wa.graph_api_url was not reloaded');
      await new Promise((r) => setTimeout(r, 50));
    }

    const port = await freePort();
    gatewayUrl = `http://127.0.0.1:${port}`;
    gateway = startProcess(
      'whatsapp-gateway',
      GATEWAY_BIN,
      [
        '--listen', `127.0.0.1:${port}`,
        '--assets-dir', FRONTEND,
        '--log-format', 'json',
        // Test hooks of the /connect demo page: the stand-in SDK and this page's own origin
        // as the "facebook.com" of the popup messages.
        '--connect-sdk-url', 'assets/test/fake-fb-sdk.js',
        '--connect-message-origin', gatewayUrl,
      ],
      {
        WA_GATEWAY_DATABASE_URL: `${BASE_DSN} dbname=${DB} user=${GATEWAY_ROLE}`,
      },
      /whatsapp-gateway listening/,
      'stderr',
    );
    await gateway.ready;

    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wa-connect-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 900, height: 520 },
    });
  });

  after(async () => {
    await context?.close().catch(() => {});
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    const gatewayExit = await stopProcess(gateway);
    await stopProcess(sim);
    try {
      psqlAdmin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    } catch {
      // best effort
    }
    // SIGTERM is a graceful shutdown: exit status 0.
    assert.equal(gatewayExit, 0, `gateway exit status; its log:\n${gateway?.logs.join('\n')}`);
    const secretsInLogs = gateway.logs.filter(
      (l) => l.includes(APP_SECRET) || /wss1\.[0-9a-f]{64}/.test(l) || mintedStates.some((s) => l.includes(s)),
    );
    assert.deepEqual(secretsInLogs, [], 'the gateway logged a secret or a state');
  });

  test('signup finishes: code + session info → gateway → wa.complete_signup → graph-sim → "connected"', async () => {
    const { tenant, state } = newTenant('Browser Flowers');
    const s = await simSignup({ verified_name: 'Browser Flowers' });
    const { page, host, consoleErrors } = await openConnectPage(state);

    const button = host.getByRole('button', { name: 'Connect WhatsApp' });
    await button.focus();
    assert.equal(await host.evaluate((el) => el.shadowRoot.activeElement?.tagName), 'BUTTON');

    const result = await clickAndWait(
      page,
      host,
      { scenario: 'finish', code: s.code, waba_id: s.waba_id, phone_number_id: s.phone_number_id },
      ['connected', 'error'],
    );
    await page.screenshot({ path: path.join(ARTIFACTS, 'connect.png') });
    assert.equal(result.flow, 'connected', result.text);
    assert.match(result.text, /WhatsApp connected/);
    assert.ok(result.text.includes('Browser Flowers'), result.text);
    assert.ok(result.text.includes(s.display_phone_number), result.text);
    assert.equal(result.busy, 'false');
    // Focus lands on the outcome.
    assert.equal(await host.evaluate((el) => el.shadowRoot.activeElement?.getAttribute('role')), 'status');

    const calls = await page.evaluate(() => window.FB.__calls);
    assert.deepEqual(calls.init[0], { appId: APP_ID, autoLogAppEvents: true, xfbml: false, version: 'v25.0' });
    assert.deepEqual(calls.login[0], {
      config_id: CONFIG_ID,
      response_type: 'code',
      override_default_response_type: true,
      extras: { setup: {}, featureType: '', sessionInfoVersion: '3' },
    });
    assert.deepEqual(consoleErrors, []);

    const status = connectionStatus(tenant);
    assert.equal(status.state, 'connected');
    assert.equal(status.waba_id, s.waba_id);
    await page.close();
  });

  test('the code arriving before the session info still exchanges both', async () => {
    const { tenant, state } = newTenant('Code First Cafe');
    const s = await simSignup();
    const { page, host } = await openConnectPage(state);
    const result = await clickAndWait(
      page,
      host,
      { scenario: 'finish', order: 'code-first', code: s.code, waba_id: s.waba_id, phone_number_id: s.phone_number_id },
      ['connected', 'error'],
    );
    assert.equal(result.flow, 'connected', result.text);
    assert.equal(connectionStatus(tenant).waba_id, s.waba_id);
    await page.close();
  });

  test('FINISH_ONLY_WABA (no phone number yet) is a supported outcome', async () => {
    const { tenant, state } = newTenant('Waba Only Shop');
    const s = await simSignup();
    const { page, host } = await openConnectPage(state);
    const result = await clickAndWait(
      page,
      host,
      { scenario: 'finish_only_waba', code: s.code, waba_id: s.waba_id },
      ['connected', 'error'],
    );
    assert.equal(result.flow, 'connected', result.text);
    assert.match(result.text, /add a phone number|WhatsApp connected/);
    assert.equal(connectionStatus(tenant).waba_id, s.waba_id);
    await page.close();
  });

  test('cancel in the popup shows the step and exchanges nothing', async () => {
    const { tenant, state } = newTenant('Cancel Corp');
    const { page, host } = await openConnectPage(state);
    const cancelled = page.evaluate(
      () => new Promise((r) => document.addEventListener('whatsapp-connect:cancelled', (e) => r(e.detail), { once: true })),
    );
    const result = await clickAndWait(page, host, { scenario: 'cancel', current_step: 'PHONE_NUMBER_SETUP' }, [
      'cancelled',
      'error',
      'connected',
    ]);
    assert.equal(result.flow, 'cancelled', result.text);
    assert.match(result.text, /Signup cancelled at phone number setup/);
    assert.deepEqual(await cancelled, { current_step: 'PHONE_NUMBER_SETUP' });
    assert.equal(connectionStatus(tenant).state, 'not_connected');
    // The button works again.
    assert.equal(await host.getByRole('button').getAttribute('aria-disabled'), 'false');
    await page.screenshot({ path: path.join(ARTIFACTS, 'connect-cancelled.png') });
    await page.close();
  });

  test('an error reported by Embedded Signup is shown clearly', async () => {
    const { state } = newTenant('Error Inc');
    const { page, host } = await openConnectPage(state);
    const result = await clickAndWait(
      page,
      host,
      { scenario: 'error', error_message: 'Your business portfolio is restricted', error_id: '524126' },
      ['error', 'cancelled', 'connected'],
    );
    assert.equal(result.flow, 'error', result.text);
    assert.match(result.text, /Meta reported an error: Your business portfolio is restricted \(error 524126\)/);
    await page.close();
  });

  test('a code the Graph API refuses ends in a clear error from the gateway', async () => {
    const { state } = newTenant('Bad Code Ltd');
    const s = await simSignup();
    const { page, host } = await openConnectPage(state);
    const errored = page.evaluate(
      () => new Promise((r) => document.addEventListener('whatsapp-connect:error', (e) => r(e.detail), { once: true })),
    );
    const result = await clickAndWait(
      page,
      host,
      { scenario: 'finish', code: 'AQD-not-a-real-code', waba_id: s.waba_id, phone_number_id: s.phone_number_id },
      ['error', 'connected'],
    );
    assert.equal(result.flow, 'error', result.text);
    assert.match(result.text, /^Could not finish connecting: /);
    const detail = await errored;
    assert.equal(detail.stage, 'exchange');
    assert.ok(detail.status >= 400, JSON.stringify(detail));
    await page.screenshot({ path: path.join(ARTIFACTS, 'connect-error.png') });
    await page.close();
  });

  test('a forged state is refused by the gateway', async () => {
    const { state } = newTenant('Forged');
    const forged = state.replace(/\.[0-9a-f]{64}$/, `.${'0'.repeat(64)}`);
    const s = await simSignup();
    const { page, host } = await openConnectPage(forged);
    const result = await clickAndWait(
      page,
      host,
      { scenario: 'finish', code: s.code, waba_id: s.waba_id, phone_number_id: s.phone_number_id },
      ['error', 'connected'],
    );
    assert.equal(result.flow, 'error', result.text);
    assert.match(result.text, /invalid, expired or already used/);
    await page.close();
  });
});
