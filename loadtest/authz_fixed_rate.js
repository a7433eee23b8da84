// k6, open loop: GET /v1/authz at a fixed arrival rate, round-robin over many keys.
//
// The closed-loop runs (authz_baseline.js, authz_many_keys.js) keep 64 VUs busy, saturate
// the machine and so measure k6's own queueing as much as the server's latency. Here k6
// starts RATE requests a second whatever the answers do (`constant-arrival-rate`), well
// below saturation, so http_req_duration is the server's response time plus loopback,
// and an iteration k6 could not start in time (every VU busy, maxVUs reached) shows up
// as `dropped_iterations` instead of silently lowering the load.
//
// The same script runs against the bare baseline and the engine, with the same keys and
// headers: the baseline ignores all but the Authorization header. Against the engine the
// keys must already be cached (the runner warms them) for this to measure the cached path.
//
// Env: BASE_URL (default http://127.0.0.1:8080), KEYS_FILE (one key a line; relative to
// this script or absolute), RATE (requests per second, default 2000), RATE_DURATION
// (default 20s), RATE_PRE_VUS (50), RATE_MAX_VUS (200).
// Do not set K6_VUS / K6_DURATION for this script: k6 reads them as its own options and
// they would replace the scenario below with a closed-loop one.
// Thresholds are informational only (they always pass); the runner reads the JSON summary.
// The keys file, request and status counters come from lib.js, as for authz_many_keys.js.

import { check } from 'k6';
import exec from 'k6/execution';
import { getAuthz, loadKeys, statusCounter, summaryOptions } from './lib.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const KEYS_FILE = __ENV.KEYS_FILE || 'results/keys.txt';

const keys = loadKeys(KEYS_FILE);

// Responses by status class; 0 (in status_other) is a transport error.
const countStatus = statusCounter();

export const options = {
  scenarios: {
    fixed_rate: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE || '2000', 10),
      timeUnit: '1s',
      duration: __ENV.RATE_DURATION || '20s',
      preAllocatedVUs: parseInt(__ENV.RATE_PRE_VUS || '50', 10),
      maxVUs: parseInt(__ENV.RATE_MAX_VUS || '200', 10),
    },
  },
  // Informational thresholds on http_req_failed and http_req_duration (lib.js), plus these.
  ...summaryOptions(['avg', 'min', 'med', 'p(50)', 'p(90)', 'p(99)', 'p(99.9)', 'max'], {
    'http_req_duration{status:200}': ['max>=0'],
    dropped_iterations: ['count>=0'],
  }),
};

export default function () {
  const key = keys[exec.scenario.iterationInTest % keys.length];
  const res = getAuthz(BASE_URL, key, 'authz-fixed');
  countStatus(res.status);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
