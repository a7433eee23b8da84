// k6: the baseline, a bare actix-web server (loadtest/baseline.rs, example `bare_authz`)
// under the same load shape as authz_many_keys.js: the same request, headers and VUs.
// The bare server only checks that an Authorization header is present, so the difference
// between the two runs is the engine's own cost per request.
//
// Env: BASE_URL (default http://127.0.0.1:8090), K6_VUS (64), K6_DURATION (30s).
// Thresholds are informational only (they always pass); the runner reads the JSON summary.
// The request, status counters and options come from lib.js, as for authz_many_keys.js.

import { check } from 'k6';
import exec from 'k6/execution';
import { closedLoop, getAuthz, statusCounter, summaryOptions } from './lib.js';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8090';

const countStatus = statusCounter();

export const options = {
  ...closedLoop('30s'),
  ...summaryOptions(),
};

export default function () {
  // Any bearer value will do; vary it like the engine run does so header sizes match.
  const key = `sp_live_${String(exec.scenario.iterationInTest % 5000).padStart(38, '0')}`;
  const res = getAuthz(BASE_URL, key, 'authz');
  countStatus(res.status);
  check(res, { 'status is 200': (r) => r.status === 200 });
}
