// Shared by the k6 scripts (authz_many_keys.js, authz_baseline.js, authz_fixed_rate.js,
// flood_one_workspace.js): reading a keys file, the GET /v1/authz request, the per-status
// counters, and the load shape and summary options they have in common.
//
// k6 only allows SharedArray and custom metrics to be created in the init context, so this
// module creates none at import: loadKeys() and statusCounter() create them and must be
// called from a script's top level.

import http from 'k6/http';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

// The non-empty lines of a keys file (one key a line), trimmed. `path` is relative to this
// directory (where the scripts are) or absolute. Init context only (it uses open()).
export function keyLines(path) {
  return open(path).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
}

// Every key of a keys file, loaded once and shared by all VUs; throws if there are none.
export function loadKeys(path) {
  return new SharedArray('keys', function () {
    const lines = keyLines(path);
    if (lines.length === 0) {
      throw new Error(`no keys in ${path}`);
    }
    return lines;
  });
}

// GET /v1/authz with `key` as the bearer, asking to authorise GET /v1/checks; `name` is the
// request's `name` tag.
export function getAuthz(baseUrl, key, name) {
  return http.get(`${baseUrl}/v1/authz`, {
    headers: {
      Authorization: `Bearer ${key}`,
      'X-Forwarded-Method': 'GET',
      'X-Forwarded-Uri': '/v1/checks',
    },
    tags: { name },
  });
}

// Creates the counters of responses by status class (status_200, status_401, status_429,
// status_5xx, status_other; 0, in status_other, is a transport error: refused, reset,
// timeout) and returns countStatus(status), which adds one response to its class.
export function statusCounter() {
  const status200 = new Counter('status_200');
  const status401 = new Counter('status_401');
  const status429 = new Counter('status_429');
  const status5xx = new Counter('status_5xx');
  const statusOther = new Counter('status_other');
  return function countStatus(status) {
    if (status === 200) status200.add(1);
    else if (status === 401) status401.add(1);
    else if (status === 429) status429.add(1);
    else if (status >= 500) status5xx.add(1);
    else statusOther.add(1);
  };
}

// Closed loop: K6_VUS VUs (default 64) back to back for K6_DURATION (default
// `defaultDuration`). K6_VUS and K6_DURATION are also k6's own option variables, so they
// win either way.
export function closedLoop(defaultDuration) {
  return {
    vus: parseInt(__ENV.K6_VUS || '64', 10),
    duration: __ENV.K6_DURATION || defaultDuration,
  };
}

// The summary options of the GET /v1/authz runs over many keys: response bodies discarded,
// `trendStats` as the summary's trend statistics (default: those of the closed-loop runs),
// and thresholds that are informational only: they never fail the run, they make the
// metrics show in the summary. `extraThresholds` adds more of them.
export function summaryOptions(
  trendStats = ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
  extraThresholds = {},
) {
  return {
    discardResponseBodies: true,
    summaryTrendStats: trendStats,
    thresholds: {
      http_req_failed: ['rate>=0'],
      http_req_duration: ['max>=0'],
      ...extraThresholds,
    },
  };
}
