// k6: the engine's hot path, GET /v1/authz, spread over many workspaces' keys.
//
// Each iteration takes the next key, round-robin over all keys across every VU
// (the test-wide iteration number modulo the key count), and asks the engine to authorise
// GET /v1/checks. With the keys already cached (the runner warms them first), this
// measures the cached verify path: parse, hash, cache lookup, scope check, rate limiter.
//
// Env: BASE_URL (default http://127.0.0.1:8080), KEYS_FILE (one key a line; a path
// relative to this script or absolute), K6_VUS (64), K6_DURATION (30s).
// Thresholds are informational only (they always pass); the runner reads the JSON summary.
// The keys file, request, status counters and options come from lib.js.

import { check } from 'k6';
import exec from 'k6/execution';
import { closedLoop, getAuthz, loadKeys, statusCounter, summaryOptions } from './lib.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const KEYS_FILE = __ENV.KEYS_FILE || 'results/keys.txt';

const keys = loadKeys(KEYS_FILE);

// Responses by status class: status_200, status_401, status_429, status_5xx, status_other.
const countStatus = statusCounter();

export const options = {
  ...closedLoop('30s'),
  ...summaryOptions(),
};

export default function () {
  const key = keys[exec.scenario.iterationInTest % keys.length];
  const res = getAuthz(BASE_URL, key, 'authz');
  countStatus(res.status);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
