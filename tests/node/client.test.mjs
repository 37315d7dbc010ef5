// campaign.v1 from Node.js: @grpc/grpc-js with the project's own .proto through
// @grpc/proto-loader, against a real server.
//
//   campaign-grpc serve --listen 127.0.0.1:50051 &
//   CAMPAIGN_GRPC_ADDRESS=127.0.0.1:50051 node --test tests/node/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const address = process.env.CAMPAIGN_GRPC_ADDRESS;
const protos = fileURLToPath(new URL('../../protos', import.meta.url));

// Field names as in the .proto, enums as their names, int64 as strings (revisions do not fit
// a double forever), and every field present with its default.
const definition = protoLoader.loadSync('campaign/v1/campaign.proto', {
  includeDirs: [protos],
  keepCase: true,
  enums: String,
  longs: String,
  defaults: true,
  oneofs: true,
});
const { campaign: { v1 } } = grpc.loadPackageDefinition(definition);

function connect() {
  assert.ok(address, 'set CAMPAIGN_GRPC_ADDRESS to the HOST:PORT of a running campaign-grpc');
  return new v1.CampaignService(address, grpc.credentials.createInsecure());
}

// A unary call as a promise, with a deadline.
function call(client, method, request) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// A server stream read message by message, each read bounded.
function reader(stream) {
  const queue = [];
  const waiting = [];
  const push = (item) => (waiting.length ? waiting.shift()(item) : queue.push(item));
  stream.on('data', (message) => push({ message }));
  stream.on('error', (error) => push({ error }));
  return async function next(ms = 10_000) {
    const item = queue.length
      ? queue.shift()
      : await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
          waiting.push((value) => {
            clearTimeout(timer);
            resolve(value);
          });
        });
    if (item.error) throw item.error;
    return item.message;
  };
}

// The next message that is not a heartbeat.
async function nextChange(next) {
  for (;;) {
    const message = await next();
    if (message.kind !== 'KIND_HEARTBEAT') return message;
  }
}

function runnableCampaign(customerId) {
  return {
    customer_id: customerId,
    type: 'TYPE_CALL',
    name: 'node promo',
    outplan_id: randomUUID(),
    outdial_id: randomUUID(),
    actions: [
      { type: 'answer' },
      { type: 'talk', option: { fields: { text: { stringValue: 'hello' } } } },
    ],
  };
}

function seconds(timestamp) {
  assert.equal(typeof timestamp.seconds, 'string'); // int64 as a string
  return Number(timestamp.seconds) + timestamp.nanos / 1e9;
}

test('creates, gets, lists, runs and stops a campaign, and watches it change', async () => {
  const client = connect();
  const customerId = randomUUID();
  try {
    const { campaign: created } = await call(client, 'CreateCampaign', {
      campaign: runnableCampaign(customerId),
      request_id: randomUUID(),
    });
    assert.match(created.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(created.status, 'STATUS_STOP');
    assert.equal(created.type, 'TYPE_CALL');
    assert.equal(created.end_handle, 'END_HANDLE_STOP'); // the server's default
    assert.equal(created.service_level, 0); // present although never set: defaults
    assert.ok(Math.abs(seconds(created.tm_create) - Date.now() / 1000) < 600);
    assert.equal(created.tm_update, null); // unset until the campaign changes
    assert.equal(created.actions[1].option.fields.text.stringValue, 'hello');

    const { campaign: got } = await call(client, 'GetCampaign', {
      customer_id: customerId,
      id: created.id,
    });
    assert.deepEqual(got, created);

    const listed = await call(client, 'ListCampaigns', { customer_id: customerId });
    assert.deepEqual(listed.campaigns.map((c) => c.id), [created.id]);
    assert.equal(listed.next_page_token, '');

    const stream = client.WatchStatus({ customer_id: customerId });
    const next = reader(stream);
    try {
      const snapshot = await next();
      assert.equal(snapshot.kind, 'KIND_SNAPSHOT');
      assert.equal(snapshot.campaign_id, created.id);
      assert.equal(snapshot.status, 'STATUS_STOP');
      const end = await next();
      assert.equal(end.kind, 'KIND_SNAPSHOT_END');
      assert.equal(typeof end.revision, 'string');
      const revision = BigInt(end.revision);

      const setStatus = async (status) => {
        const request = { customer_id: customerId, id: created.id, status };
        return (await call(client, 'UpdateCampaignStatus', request)).campaign;
      };
      assert.equal((await setStatus('STATUS_RUN')).status, 'STATUS_RUN');
      const stopping = await setStatus('STATUS_STOP');
      assert.equal(stopping.status, 'STATUS_STOPPING');
      // A second STOP only asks again: the drain is the dialer's to confirm.
      assert.deepEqual(await setStatus('STATUS_STOP'), stopping);

      const [ran, asked] = [await nextChange(next), await nextChange(next)];
      assert.equal(asked.status, 'STATUS_STOPPING');
      assert.equal(asked.stop_revision, stopping.stop_revision); // int64 as a string
      const confirm = { customer_id: customerId, id: created.id };
      const { campaign: stopped } = await call(client, 'ConfirmDrained', {
        ...confirm,
        stop_revision: asked.stop_revision,
      });
      assert.equal(stopped.status, 'STATUS_STOP');
      const drained = await nextChange(next);

      const changes = [ran, asked, drained];
      assert.deepEqual(
        changes.map((m) => [m.kind, m.campaign_id, m.previous_status, m.status, m.reason]),
        [
          ['KIND_CHANGE', created.id, 'STATUS_STOP', 'STATUS_RUN', 'REASON_REQUESTED'],
          ['KIND_CHANGE', created.id, 'STATUS_RUN', 'STATUS_STOPPING', 'REASON_REQUESTED'],
          ['KIND_CHANGE', created.id, 'STATUS_STOPPING', 'STATUS_STOP', 'REASON_DRAINED'],
        ],
      );
      assert.deepEqual(
        changes.map((m) => BigInt(m.revision)),
        [revision + 1n, revision + 2n, revision + 3n],
      );
      for (const m of changes) {
        assert.ok(seconds(m.tm_event) >= seconds(created.tm_create));
      }
    } finally {
      stream.cancel();
    }
  } finally {
    client.close();
  }
});

test('a full view carries the campaign as of each change', async () => {
  const client = connect();
  const customerId = randomUUID();
  try {
    const { campaign: created } = await call(client, 'CreateCampaign', {
      campaign: runnableCampaign(customerId),
    });
    const stream = client.WatchStatus({ customer_id: customerId, view: 'WATCH_VIEW_FULL' });
    const next = reader(stream);
    try {
      const snapshot = await next();
      assert.equal(snapshot.kind, 'KIND_SNAPSHOT');
      assert.deepEqual(snapshot.campaign, created);
      const end = await next();
      assert.equal(end.kind, 'KIND_SNAPSHOT_END');
      assert.equal(end.heartbeat_interval.nanos, 500_000_000); // the test server's 0.5 s

      const { campaign: renamed } = await call(client, 'UpdateCampaign', {
        campaign: { customer_id: customerId, id: created.id, name: 'renamed', etag: created.etag },
        update_mask: { paths: ['name'] },
      });
      const update = await nextChange(next);
      assert.equal(update.reason, 'REASON_UPDATED');
      assert.deepEqual(update.campaign, renamed);
    } finally {
      stream.cancel();
    }
  } finally {
    client.close();
  }
});

test('an error carries its code, message and google.rpc.Status details', async () => {
  const client = connect();
  try {
    const error = await call(client, 'CreateCampaign', {
      campaign: { customer_id: 'not-a-uuid', type: 'TYPE_CALL', service_level: 200 },
    }).then(
      () => assert.fail('an invalid campaign was created'),
      (err) => err,
    );
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /campaign\.customer_id/);
    assert.match(error.details, /campaign\.service_level/);
    const [details] = error.metadata.get('grpc-status-details-bin');
    assert.ok(Buffer.isBuffer(details) && details.length > 0, 'grpc-status-details-bin is missing');
    // The ErrorInfo reason and domain are in there, readable without decoding.
    assert.ok(details.includes('campaign-grpc'));

    const missing = await call(client, 'GetCampaign', {
      customer_id: randomUUID(),
      id: randomUUID(),
    }).then(
      () => assert.fail('a campaign was found'),
      (err) => err,
    );
    assert.equal(missing.code, grpc.status.NOT_FOUND);
    assert.ok(missing.metadata.get('grpc-status-details-bin')[0].includes('CAMPAIGN_NOT_FOUND'));
  } finally {
    client.close();
  }
});
