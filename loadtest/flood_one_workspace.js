// k6: one workspace's single live key, hammered far past its 1,200 requests/minute.
//
// Reports how many requests were accepted (200) and refused (429), the latency of each
// separately (a refusal should be at least as cheap as an acceptance), and how many were
// accepted within the run's first 60 seconds, which the limiter's contract caps at 1,200.
//
// Two load shapes:
// - closed loop (default): K6_VUS VUs (64) back to back for K6_DURATION (20s). Saturates the
//   machine: the counts are the point, the latencies include k6's own queueing.
// - open loop, when FLOOD_RATE is set: `constant-arrival-rate` at FLOOD_RATE requests a
//   second for FLOOD_DURATION (20s), FLOOD_PRE_VUS (50) preallocated VUs, at most
//   FLOOD_MAX_VUS (200). Below saturation, so the 200 and 429 latencies are the server's:
//   the first 1,200 requests of a fresh workspace are accepted, every later one refused.
//   Do not set K6_VUS / K6_DURATION in this mode (k6 would replace the scenario with them).
//
// Env: BASE_URL (default http://127.0.0.1:8080), KEY_FILE (file whose first line is the
// key), and the variables above.
// Thresholds are informational only (they always pass); they make the per-status
// submetrics appear in the summary. The runner reads the JSON summary.
// Reading the key file, the request and the closed-loop shape come from lib.js; the
// counters are this script's own (401 and 5xx count as status_other here).

import { check } from 'k6';
import { SharedArray } from 'k6/data';
import { Counter, Trend } from 'k6/metrics';
import { closedLoop, getAuthz, keyLines } from './lib.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const KEY_FILE = __ENV.KEY_FILE || 'results/flood-key.txt';

const key = new SharedArray('flood-key', function () {
  const lines = keyLines(KEY_FILE);
  if (lines.length === 0) {
    throw new Error(`no key in ${KEY_FILE}`);
  }
  return [lines[0]];
})[0];

const latency200 = new Trend('latency_200', true);
const latency429 = new Trend('latency_429', true);
const status200 = new Counter('status_200');
const status429 = new Counter('status_429');
const statusOther = new Counter('status_other');
const acceptedFirstMinute = new Counter('accepted_first_minute');

const FLOOD_RATE = parseInt(__ENV.FLOOD_RATE || '0', 10);

const loadShape = FLOOD_RATE > 0
  ? {
    scenarios: {
      flood_fixed_rate: {
        executor: 'constant-arrival-rate',
        rate: FLOOD_RATE,
        timeUnit: '1s',
        duration: __ENV.FLOOD_DURATION || '20s',
        preAllocatedVUs: parseInt(__ENV.FLOOD_PRE_VUS || '50', 10),
        maxVUs: parseInt(__ENV.FLOOD_MAX_VUS || '200', 10),
      },
    },
  }
  : closedLoop('20s');

export const options = {
  ...loadShape,
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(50)', 'p(90)', 'p(99)', 'max'],
  thresholds: {
    // Informational only: each always passes.
    'http_req_duration{status:200}': ['max>=0'],
    'http_req_duration{status:429}': ['max>=0'],
    'http_reqs{status:200}': ['count>=0'],
    'http_reqs{status:429}': ['count>=0'],
    latency_200: ['max>=0'],
    latency_429: ['max>=0'],
    accepted_first_minute: ['count>=0'],
    dropped_iterations: ['count>=0'],
  },
};

export function setup() {
  return { startedAt: Date.now() };
}

export default function (data) {
  const res = getAuthz(BASE_URL, key, 'authz-flood');
  if (res.status === 200) {
    status200.add(1);
    latency200.add(res.timings.duration);
    if (Date.now() - data.startedAt < 60000) {
      acceptedFirstMinute.add(1);
    }
  } else if (res.status === 429) {
    status429.add(1);
    latency429.add(res.timings.duration);
  } else {
    statusOther.add(1);
  }
  check(res, { 'status is 200 or 429': (r) => r.status === 200 || r.status === 429 });
}
