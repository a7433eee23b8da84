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

import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const KEYS_FILE = __ENV.KEYS_FILE || 'results/keys.txt';

const keys = new SharedArray('keys', function () {
  const lines = open(KEYS_FILE).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  if (lines.length === 0) {
    throw new Error(`no keys in ${KEYS_FILE}`);
  }
  return lines;
});

// Responses by status class; 0 is a transport error (refused, reset, timeout).
const status200 = new Counter('status_200');
const status401 = new Counter('status_401');
const status429 = new Counter('status_429');
const status5xx = new Counter('status_5xx');
const statusOther = new Counter('status_other');

export const options = {
  // K6_VUS and K6_DURATION are also k6's own option variables, so they win either way.
  vus: parseInt(__ENV.K6_VUS || '64', 10),
  duration: __ENV.K6_DURATION || '30s',
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  thresholds: {
    // Informational: never fail the run; they make the metrics show in the summary.
    http_req_failed: ['rate>=0'],
    http_req_duration: ['max>=0'],
  },
};

function countStatus(status) {
  if (status === 200) status200.add(1);
  else if (status === 401) status401.add(1);
  else if (status === 429) status429.add(1);
  else if (status >= 500) status5xx.add(1);
  else statusOther.add(1);
}

export default function () {
  const key = keys[exec.scenario.iterationInTest % keys.length];
  const res = http.get(`${BASE_URL}/v1/authz`, {
    headers: {
      Authorization: `Bearer ${key}`,
      'X-Forwarded-Method': 'GET',
      'X-Forwarded-Uri': '/v1/checks',
    },
    tags: { name: 'authz' },
  });
  countStatus(res.status);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
