// runner.mjs: the Node side of pkg/sfnlocal (embedded in the Go package and
// run with `node --input-type=module --eval`). It reads one JSON request on
// stdin and writes newline-delimited JSON (never JavaScript notation) on
// stdout:
//   {"kind":"event","event":{...}}   engine events and TaskStarted/TaskSucceeded/TaskFailed
//   {"kind":"result",...}            the execution's end (run) or the validation (validate)
//   {"kind":"fatal","message":"..."} a harness problem: the result is not AWS behaviour
// SFNLOCAL_MODULES is the node_modules directory holding
// aws-local-stepfunctions and asl-validator.
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { readFileSync, writeSync } from 'node:fs';
import http from 'node:http';

const modules = process.env.SFNLOCAL_MODULES;

function emit(obj) {
  // Synchronous writes keep the order of lines and survive process.exit.
  writeSync(1, JSON.stringify(obj) + '\n');
}

function fatal(message) {
  emit({ kind: 'fatal', message });
  process.exit(3);
}

// Node's timers overflow above 2^31-1 ms (about 24.8 days): a longer delay
// fires after 1 ms (TimeoutOverflowWarning). The engine uses setTimeout for
// Task and execution timeouts and for Wait states.
const MAX_TIMER_SECONDS = Math.floor(2147483647 / 1000);

// Step Functions' payload limit per state input, output and task result
// (256 KiB of UTF-8); AWS fails with States.DataLimitExceeded, which
// States.ALL does not catch. The engine has no limit: stop the run instead.
const MAX_PAYLOAD_BYTES = 262144;
function checkSize(what, value) {
  const n = Buffer.byteLength(JSON.stringify(value ?? null), 'utf8');
  if (n > MAX_PAYLOAD_BYTES) {
    fatal(`${what} is ${n} bytes, more than Step Functions' 256 KiB: AWS would fail with States.DataLimitExceeded`);
  }
}

const LAMBDA_INVOKE = /^arn:[^:]+:states:::lambda:invoke$/;
const LAMBDA_FUNCTION = /^arn:[^:]+:lambda:[^:]+:\d{12}:function:[^:]+(:[^:]+)?$/;

// forEachState calls fn(name, state, outer) for every state, nested ones
// included; outer is the Map or Parallel state around it ('' at the top).
function forEachState(def, fn, outer = '') {
  for (const [name, state] of Object.entries(def.States ?? {})) {
    fn(name, state, outer);
    const inner = state.ItemProcessor ?? state.Iterator;
    if (inner) forEachState(inner, fn, name);
    for (const b of state.Branches ?? []) forEachState(b, fn, name);
  }
}

// Stray Map iterations. The engine starts the Map's queued iterations even
// after one failed (its p-limit queue is not cleared), so their tasks would
// invoke functions after the Map, and maybe the execution, failed; AWS stops
// a Map's iterations when one fails. For a Map at the top level of the
// definition (one live instance at a time), tasks of its iterations that
// start after an iteration failed are not invoked: they never settle and
// are reported as TaskSuppressed. topMap maps a state inside such a Map to
// the Map.
function topMaps(def) {
  const topMap = {};
  const outerOf = {};
  forEachState(def, (name, state, outer) => { outerOf[name] = outer; });
  for (const name of Object.keys(outerOf)) {
    let top = name;
    while (outerOf[top]) top = outerOf[top];
    if (top !== name && def.States[top]?.Type === 'Map') {
      // Only when the Map itself is not inside a Map or Parallel.
      topMap[name] = top;
    }
  }
  return topMap;
}

// prepare makes the engine's timers behave as in AWS (see the package doc)
// and returns the Task states' resources by state name.
function prepare(def, waitOverrides) {
  if (def.TimeoutSeconds > MAX_TIMER_SECONDS) def.TimeoutSeconds = MAX_TIMER_SECONDS;
  const resources = {};
  forEachState(def, (name, state) => {
    if (state.Type === 'Task') {
      if (name in resources && resources[name] !== state.Resource) {
        fatal(`two Task states are named ${JSON.stringify(name)}: the engine's task handlers are keyed by state name`);
      }
      resources[name] = state.Resource;
      // AWS has no default Task timeout (the function's own timeout applies);
      // the engine defaults to 60 s.
      if (state.TimeoutSeconds === undefined && state.TimeoutSecondsPath === undefined) {
        state.TimeoutSeconds = MAX_TIMER_SECONDS;
      } else if (state.TimeoutSeconds > MAX_TIMER_SECONDS) {
        state.TimeoutSeconds = MAX_TIMER_SECONDS;
      }
    }
    if (state.Type === 'Wait' && !(name in waitOverrides) && state.Seconds > MAX_TIMER_SECONDS) {
      fatal(`Wait state ${JSON.stringify(name)} waits ${state.Seconds} s, longer than Node can time (${MAX_TIMER_SECONDS} s): override it with WaitOverrides`);
    }
  });
  return resources;
}

// Endpoint pools: the RIE serves one invocation at a time (a second
// concurrent invocation crashes it), like one Lambda execution environment;
// a function gets one endpoint per environment and invocations queue for a
// free one.
class Pool {
  constructor(urls) {
    this.free = [...urls];
    this.waiters = [];
  }
  async acquire() {
    if (this.free.length > 0) return this.free.shift();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  release(url) {
    const w = this.waiters.shift();
    if (w) w(url);
    else this.free.push(url);
  }
}

// post sends body to url. node:http rather than fetch: fetch gives up on a
// response after 300 s, and a function may run for 900 s.
function post(url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function functionName(nameOrArn) {
  // arn:aws:lambda:us-east-1:123456789012:function:name[:qualifier],
  // 123456789012:function:name, name[:qualifier]
  const i = nameOrArn.indexOf('function:');
  const rest = i >= 0 ? nameOrArn.slice(i + 'function:'.length) : nameOrArn;
  return rest.split(':')[0];
}

// Errors the Lambda service raises rather than the function's code
// (timeouts, crashes, out of memory) reach Step Functions as Lambda.Unknown
// ("Handle Lambda service exceptions", Step Functions developer guide).
function errorName(errorType) {
  if (!errorType || errorType.startsWith('Runtime.') || errorType.startsWith('Sandbox.')) return 'Lambda.Unknown';
  return errorType;
}

async function run(req) {
  const { StateMachine, ExecutionError, ExecutionTimeoutError } = await import(
    pathToFileURL(path.join(modules, 'aws-local-stepfunctions', 'build', 'main.node.esm.js')).href
  );
  const def = req.definition;
  const waitOverrides = req.waitOverrides ?? {};
  const resources = prepare(def, waitOverrides);
  const topMap = topMaps(def);
  const failedMaps = new Set();
  const pools = new Map();
  for (const [arn, urls] of Object.entries(req.functions ?? {})) pools.set(arn, new Pool(urls));
  const findPool = (nameOrArn) => {
    if (pools.has(nameOrArn)) return [nameOrArn, pools.get(nameOrArn)];
    const want = functionName(nameOrArn);
    for (const [arn, pool] of pools) if (functionName(arn) === want) return [arn, pool];
    fatal(`no endpoint for function ${nameOrArn}: add it to Options.Functions (known: ${[...pools.keys()].join(', ') || 'none'})`);
  };
  let calls = 0;
  const handlers = {};
  for (const [stateName, resource] of Object.entries(resources)) {
    handlers[stateName] = async (input) => {
      let fn, payload, wrap;
      if (LAMBDA_INVOKE.test(resource)) {
        if (input === null || typeof input !== 'object' || typeof input.FunctionName !== 'string') {
          fatal(`state ${stateName}: lambda:invoke needs Parameters.FunctionName`);
        }
        if (input.InvocationType !== undefined && input.InvocationType !== 'RequestResponse') {
          fatal(`state ${stateName}: InvocationType ${input.InvocationType} is not supported (only RequestResponse)`);
        }
        fn = input.FunctionName;
        // Lambda hands an invocation without a payload "{}".
        payload = input.Payload === undefined ? {} : input.Payload;
        wrap = true;
      } else if (LAMBDA_FUNCTION.test(resource)) {
        fn = resource;
        payload = input;
        wrap = false;
      } else {
        fatal(`state ${stateName}: resource ${resource} is not a Lambda function or arn:aws:states:::lambda:invoke`);
      }
      const [arn, pool] = findPool(fn);
      const call = ++calls;
      // Let the engine's events (queued in microtasks) reach the event loop
      // below first: they are printed before this task's, and a failed
      // iteration of the Map is known.
      await new Promise((resolve) => setImmediate(resolve));
      if (failedMaps.has(topMap[stateName])) {
        emit({ kind: 'event', event: { type: 'TaskSuppressed', timestamp: Date.now(), state: stateName, stateType: 'Task', input: payload, function: arn, call } });
        return new Promise(() => {});
      }
      const url = await pool.acquire();
      if (failedMaps.has(topMap[stateName])) {
        pool.release(url);
        emit({ kind: 'event', event: { type: 'TaskSuppressed', timestamp: Date.now(), state: stateName, stateType: 'Task', input: payload, function: arn, call } });
        return new Promise(() => {});
      }
      emit({ kind: 'event', event: { type: 'TaskStarted', timestamp: Date.now(), state: stateName, stateType: 'Task', input: payload, function: arn, endpoint: url, call } });
      let res;
      try {
        res = await post(url, JSON.stringify(payload));
      } catch (e) {
        fatal(`state ${stateName}: invoke ${arn} at ${url}: ${e.message}`);
      } finally {
        pool.release(url);
      }
      const text = res.text;
      let body, parsed = false;
      try {
        body = JSON.parse(text);
        parsed = true;
      } catch {}
      // The RIE answers a function error with HTTP 200 (502 when the runtime
      // exits) and {errorType, errorMessage}, without X-Amz-Function-Error,
      // and a timeout with the plain text "Task timed out after N seconds".
      const isError = parsed && body !== null && typeof body === 'object' && !Array.isArray(body) &&
        typeof body.errorMessage === 'string' && Object.keys(body).every((k) => ['errorType', 'errorMessage', 'stackTrace'].includes(k));
      const timedOut = !parsed && res.status === 200 && /^Task timed out after/.test(text);
      if (isError || timedOut) {
        const errorType = isError ? body.errorType : 'Sandbox.Timedout';
        const cause = isError ? text : JSON.stringify({ errorMessage: text });
        const name = errorName(errorType);
        emit({ kind: 'event', event: { type: 'TaskFailed', timestamp: Date.now(), state: stateName, stateType: 'Task', function: arn, endpoint: url, call, error: name, cause, functionErrorType: errorType ?? '' } });
        const err = new Error(cause);
        err.name = name;
        throw err;
      }
      if (!parsed || res.status !== 200) {
        fatal(`state ${stateName}: invoke ${arn} at ${url}: HTTP ${res.status}: ${text.slice(0, 500)}`);
      }
      checkSize(`state ${stateName}: the result of ${arn}`, body);
      emit({ kind: 'event', event: { type: 'TaskSucceeded', timestamp: Date.now(), state: stateName, stateType: 'Task', output: body, function: arn, endpoint: url, call } });
      if (!wrap) return body;
      return {
        ExecutedVersion: '$LATEST',
        Payload: body,
        SdkHttpMetadata: { HttpHeaders: { 'Content-Type': 'application/json', 'X-Amz-Executed-Version': '$LATEST' }, HttpStatusCode: 200 },
        SdkResponseMetadata: { RequestId: `local-${call}` },
        StatusCode: 200,
      };
    };
  }

  const sm = new StateMachine(def, { validationOptions: { checkArn: true, checkPaths: true } });
  const execution = sm.run(req.input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: waitOverrides,
      retryIntervalOverrides: req.retryIntervalOverrides ?? {},
    },
    context: req.context,
  });
  const drained = (async () => {
    for await (const ev of execution.eventLogs) {
      const parent = ev.parentState?.name;
      if (ev.type === 'MapIterationFailed' && Object.values(topMap).includes(parent)) failedMaps.add(parent);
      if ((ev.type === 'StateEntered' || ev.type === 'StateRetried') && failedMaps.has(ev.state.name)) failedMaps.delete(ev.state.name);
      if (ev.type === 'ExecutionStarted') checkSize('the execution input', ev.input);
      if (ev.type === 'StateExited') checkSize(`state ${ev.state.name}: the output`, ev.state.output);
      // Events of stray iterations (see topMaps) are not AWS's.
      if (ev.type === 'MapIterationStarted' && failedMaps.has(parent)) continue;
      if (ev.index !== undefined && ev.state && failedMaps.has(topMap[ev.state.name])) continue;
      emit({ kind: 'event', event: flatten(ev) });
    }
  })();
  let result;
  try {
    const output = await execution.result;
    result = { kind: 'result', status: 'SUCCEEDED', output };
  } catch (e) {
    if (e instanceof ExecutionError) {
      const c = e.cause;
      result = { kind: 'result', status: 'FAILED', error: c?.name ?? '', cause: causeText(c?.cause ?? c?.message) };
    } else if (e instanceof ExecutionTimeoutError) {
      result = { kind: 'result', status: 'TIMED_OUT', error: 'States.Timeout' };
    } else {
      fatal(`execution: ${e?.stack ?? e}`);
    }
  }
  await drained;
  emit(result);
  // Invocations still in flight (iterations of a failed Map) finish in
  // their RIE, as in Lambda; the execution does not wait for them.
  process.exit(0);
}

function causeText(c) {
  if (c === undefined || c === null) return '';
  return typeof c === 'string' ? c : JSON.stringify(c);
}

function flatten(ev) {
  const out = { type: ev.type, timestamp: ev.timestamp };
  if (ev.state) {
    out.state = ev.state.name;
    out.stateType = ev.state.type;
    out.input = ev.state.input;
    if ('output' in ev.state) out.output = ev.state.output;
  }
  if (ev.parentState) {
    out.parent = ev.parentState.name;
    out.stateType = ev.parentState.type;
  }
  if (ev.index !== undefined) out.index = ev.index;
  if (ev.type === 'ExecutionStarted') out.input = ev.input;
  if (ev.type === 'ExecutionSucceeded') out.output = ev.output;
  if (ev.Error !== undefined) out.error = ev.Error;
  if (ev.Cause !== undefined) out.cause = causeText(ev.Cause);
  if (ev.retry) out.attempt = ev.retry.attempt;
  if (ev.catch) out.next = ev.catch.catcher.Next;
  return out;
}

async function validate(req) {
  const { default: validator } = await import(
    pathToFileURL(path.join(modules, 'asl-validator', 'dist', 'src', 'validator.js')).href
  );
  // The validator writes default QueryLanguage fields into what it checks.
  const { isValid, errors } = validator(structuredClone(req.definition), { checkArn: true, checkPaths: true });
  emit({ kind: 'result', valid: isValid, errors: (errors ?? []).map((e) => `${e['Error code']}: ${e.Message}`) });
}

let req;
try {
  req = JSON.parse(readFileSync(0, 'utf8'));
} catch (e) {
  fatal(`read request: ${e.message}`);
}
if (!modules) fatal('SFNLOCAL_MODULES is not set');
try {
  if (req.mode === 'validate') await validate(req);
  else if (req.mode === 'run') await run(req);
  else fatal(`unknown mode ${req.mode}`);
} catch (e) {
  fatal(e?.stack ?? String(e));
}
