// The seed's load profile for http-spawn: a ramping arrival rate of task submissions, names from
// a small pool, durations of 1-5 s, every answer checked for 202.
//
//   k6 run k6.js                                  # against http://127.0.0.1:8080
//   BASE_URL=http://127.0.0.1:9000 PEAK_RATE=3000 k6 run k6.js
//
// START_RATE and PEAK_RATE are requests per second; RAMP, HOLD and COOL are k6 durations.
// EXPECT_OVERLOAD=1 (make reliability's overload case) drives a host past its capacity on
// purpose: a 429 or 503 carrying Retry-After is then a right answer too, and what fails is any
// other answer or a refusal without Retry-After; latency is not judged.
// k6 itself needs ~150 us of CPU per request, so on a 2-core machine shared with the host keep
// PEAK_RATE within a few thousand per second.

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const START_RATE = Number(__ENV.START_RATE || 1000);
const PEAK_RATE = Number(__ENV.PEAK_RATE || 2000);
const RAMP = __ENV.RAMP || '20s';
const HOLD = __ENV.HOLD || '20s';
const COOL = __ENV.COOL || '5s';
const EXPECT_OVERLOAD = Boolean(__ENV.EXPECT_OVERLOAD);

const NAMES = [
  'generate-report',
  'send-email',
  'resize-image',
  'sync-inventory',
  'compute-stats',
  'cleanup-cache',
];

const tasksSpawned = new Counter('tasks_spawned');
const tasksRejected = new Counter('tasks_rejected');
const tasksErrored = new Counter('tasks_errored');
const taskFailures = new Rate('task_failures');
const spawnResponseTime = new Trend('spawn_response_time', true);
// Counted only with EXPECT_OVERLOAD.
const answers429 = new Counter('answers_429');
const answers503 = new Counter('answers_503');
const refusalsWithoutRetryAfter = new Counter('refusals_without_retry_after');

export const options = {
  scenarios: {
    spawn: {
      executor: 'ramping-arrival-rate',
      startRate: START_RATE,
      timeUnit: '1s',
      preAllocatedVUs: Math.max(10, Math.ceil(PEAK_RATE / 20)),
      maxVUs: Math.max(50, PEAK_RATE),
      stages: [
        { target: PEAK_RATE, duration: RAMP },
        { target: PEAK_RATE, duration: HOLD },
        { target: 0, duration: COOL },
      ],
    },
  },
  thresholds: EXPECT_OVERLOAD
    ? { task_failures: ['rate==0'] }
    : {
      spawn_response_time: ['p(95)<500', 'p(99)<1000'],
      task_failures: ['rate<0.01'],
    },
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
};

const PARAMS = { headers: { 'Content-Type': 'application/json' } };

export default function () {
  const name = NAMES[Math.floor(Math.random() * NAMES.length)];
  const duration = 1 + Math.floor(Math.random() * 5);
  const res = http.post(`${BASE_URL}/api/tasks`, JSON.stringify({ name, duration }), PARAMS);
  spawnResponseTime.add(res.timings.duration);
  if (EXPECT_OVERLOAD) {
    overloaded(res);
    return;
  }
  const ok = check(res, {
    'status is 202': (r) => r.status === 202,
    'has a pid': (r) => r.status === 202 && typeof r.json('pid') === 'string',
  });
  taskFailures.add(!ok);
  if (ok) {
    tasksSpawned.add(1);
  } else if (res.status === 429 || res.status === 503) {
    tasksRejected.add(1);
  } else {
    tasksErrored.add(1);
  }
}

// An answer from a host driven past its capacity: a 202 with a pid, or a refusal that says
// when to come back.
function overloaded(res) {
  const spawned = res.status === 202 && typeof res.json('pid') === 'string';
  const refused = res.status === 429 || res.status === 503;
  const retryAfter = refused && res.headers['Retry-After'] !== undefined;
  const ok = check(res, {
    '202 with a pid, or 429/503 with Retry-After': () => spawned || retryAfter,
  });
  taskFailures.add(!ok);
  if (spawned) {
    tasksSpawned.add(1);
  } else if (refused) {
    tasksRejected.add(1);
    (res.status === 429 ? answers429 : answers503).add(1);
    refusalsWithoutRetryAfter.add(retryAfter ? 0 : 1);
  } else {
    tasksErrored.add(1);
  }
}

export function handleSummary(data) {
  const trend = data.metrics.spawn_response_time.values;
  const count = (name) => (data.metrics[name] ? data.metrics[name].values.count : 0);
  const ms = (v) => `${v.toFixed(2)} ms`;
  const lines = [
    '',
    'http-spawn load test',
    `  target            ${BASE_URL}/api/tasks`,
    `  tasks spawned     ${count('tasks_spawned')}`,
    `  tasks rejected    ${count('tasks_rejected')} (429/503: host full)`,
    `  other errors      ${count('tasks_errored')}`,
    `  failure rate      ${(data.metrics.task_failures.values.rate * 100).toFixed(2)} %`,
    `  response p50      ${ms(trend.med)}`,
    `  response p95      ${ms(trend['p(95)'])}`,
    `  response p99      ${ms(trend['p(99)'])}`,
    '',
  ];
  if (EXPECT_OVERLOAD) {
    lines.splice(lines.length - 1, 0,
      `  429 / 503         ${count('answers_429')} / ${count('answers_503')}`,
      `  refusals without Retry-After ${count('refusals_without_retry_after')}`);
  }
  const thresholds = Object.entries(data.metrics)
    .filter(([, m]) => m.thresholds)
    .flatMap(([name, m]) =>
      Object.entries(m.thresholds).map(([t, r]) => `  ${r.ok ? 'ok  ' : 'FAIL'} ${name} ${t}`));
  const outputs = { stdout: lines.concat(['thresholds', ...thresholds, '']).join('\n') };
  // SUMMARY_JSON=path also writes k6's whole summary there, for `make bench`.
  if (__ENV.SUMMARY_JSON) {
    outputs[__ENV.SUMMARY_JSON] = JSON.stringify(data);
  }
  return outputs;
}
