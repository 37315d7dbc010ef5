// clients/service_config.json on a @grpc/grpc-js channel: a server of its own answers each
// method UNAVAILABLE twice, then OK; the channel retries the methods the file names, and only
// those.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const protos = fileURLToPath(new URL('../../protos', import.meta.url));
const config = readFileSync(new URL('../../clients/service_config.json', import.meta.url), 'utf8');

const definition = protoLoader.loadSync('campaign/v1/campaign.proto', {
  includeDirs: [protos],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const { campaign: { v1 } } = grpc.loadPackageDefinition(definition);

const RETRIED = [
  'GetCampaign', 'ListCampaigns', 'ListCampaignEvents', 'UndeleteCampaign',
  'UpdateCampaignStatus', 'ConfirmDrained', 'ReportOutdialExhausted',
];
const NOT_RETRIED = ['CreateCampaign', 'UpdateCampaign', 'DeleteCampaign'];

function flakyServer(calls) {
  const server = new grpc.Server();
  const handlers = {};
  for (const name of [...RETRIED, ...NOT_RETRIED]) {
    handlers[name] = (_call, callback) => {
      calls[name] = (calls[name] ?? 0) + 1;
      if (calls[name] <= 2) callback({ code: grpc.status.UNAVAILABLE, details: 'try again' });
      else callback(null, {});
    };
  }
  server.addService(v1.CampaignService.service, handlers);
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) =>
      (err ? reject(err) : resolve({ server, port })));
  });
}

function call(client, method) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve) => {
    client[method]({}, { deadline }, (err) => resolve(err ? err.code : grpc.status.OK));
  });
}

test('the service config retries UNAVAILABLE where it is safe, and nowhere else', async () => {
  const calls = {};
  const { server, port } = await flakyServer(calls);
  const client = new v1.CampaignService(`127.0.0.1:${port}`, grpc.credentials.createInsecure(),
    { 'grpc.service_config': config });
  try {
    for (const name of RETRIED) assert.equal(await call(client, name), grpc.status.OK, name);
    for (const name of NOT_RETRIED) {
      assert.equal(await call(client, name), grpc.status.UNAVAILABLE, name);
    }
    const expected = Object.fromEntries([
      ...RETRIED.map((name) => [name, 3]),
      ...NOT_RETRIED.map((name) => [name, 1]),
    ]);
    assert.deepEqual(calls, expected);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
