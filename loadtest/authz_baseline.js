// k6: the baseline, a bare actix-web server (loadtest/baseline.rs, example `bare_authz`)
// under the same load shape as authz_many_keys.js: the same request, headers and VUs.
// The bare server only checks that an Authorization header is present, so the difference
// between the two runs is the engine's own cost per request.
//
// Env: BASE_URL (default http://127.0.0.1:8090), K6_VUS (64), K6_DURATION (30s).
// Thresholds are informational only (they always pass); the runner reads the JSON summary.

import http from 'k6/http';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8090';

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
  // Any bearer value will do; vary it like the engine run does so header sizes match.
  const key = `sp_live_${String(exec.scenario.iterationInTest % 5000).padStart(38, '0')}`;
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
