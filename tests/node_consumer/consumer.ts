// A program on @campaign-grpc/client as its users have it: installed from the packed tarball,
// type-checked with strict, and run against a real server.
//
//   npx tsc && CAMPAIGN_GRPC_ADDRESS=127.0.0.1:50051 node --test out/consumer.js
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Server, ServerCredentials, type handleServerStreamingCall, type handleUnaryCall } from '@grpc/grpc-js';
import {
  Campaign_Status,
  Campaign_Type,
  CampaignServiceService,
  type CampaignServiceClient,
  CreateCampaignRequest,
  type CreateCampaignResponse,
  GetCampaignRequest,
  GetCampaignResponse,
  Metadata,
  type ServiceError,
  UpdateCampaignStatusRequest,
  type UpdateCampaignStatusResponse,
  type WatchStatusRequest,
  WatchStatusResponse,
  WatchStatusResponse_Kind as Kind,
  createClient,
  errorDetails,
  status,
  watch,
} from '@campaign-grpc/client';

const address = process.env.CAMPAIGN_GRPC_ADDRESS ?? '127.0.0.1:50051';

// A unary call as a promise: call((done) => client.getCampaign(request, ...deadline(), done)).
function call<Response>(
  start: (done: (err: ServiceError | null, response: Response) => void) => void,
): Promise<Response> {
  return new Promise((resolve, reject) => start((err, response) => (err ? reject(err) : resolve(response))));
}

// Every call gets a deadline of its own.
function deadline(seconds = 10): [Metadata, { deadline: Date }] {
  return [new Metadata(), { deadline: new Date(Date.now() + seconds * 1000) }];
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => assert.fail('the call succeeded'),
    (err: unknown) => err,
  );
}

async function createCampaign(client: CampaignServiceClient, customerId: string): Promise<string> {
  const request = CreateCampaignRequest.fromPartial({
    campaign: {
      customerId,
      type: Campaign_Type.TYPE_CALL,
      name: 'spring promo',
      outplanId: randomUUID(),
      outdialId: randomUUID(),
      actions: [{ type: 'answer' }, { type: 'hangup' }],
    },
    requestId: randomUUID(), // the same on a retry: the retry cannot create a second campaign
  });
  const { campaign } = await call<CreateCampaignResponse>((done) =>
    client.createCampaign(request, ...deadline(), done),
  );
  assert.ok(campaign);
  return campaign.id;
}

async function setStatus(client: CampaignServiceClient, customerId: string, id: string, to: Campaign_Status) {
  const request = UpdateCampaignStatusRequest.fromPartial({ customerId, id, status: to });
  const { campaign } = await call<UpdateCampaignStatusResponse>((done) =>
    client.updateCampaignStatus(request, ...deadline(), done),
  );
  return campaign?.status;
}

test('creates a campaign; a watch resumed after its last revision sees only later changes', { timeout: 30_000 }, async () => {
  const client = createClient(address); // retries UNAVAILABLE where that is safe
  const customerId = randomUUID();
  try {
    const id = await createCampaign(client, customerId);

    const first = watch(client, { customerId }); // a snapshot first, then the changes
    const seen: [Kind, string, Campaign_Status][] = [];
    for await (const message of first) {
      seen.push([message.kind, message.campaignId, message.status]);
      if (message.kind === Kind.KIND_SNAPSHOT_END) {
        assert.equal(await setStatus(client, customerId, id, Campaign_Status.STATUS_RUN), Campaign_Status.STATUS_RUN);
      }
      if (message.kind === Kind.KIND_CHANGE) break; // ends the stream
    }
    assert.deepEqual(seen, [
      [Kind.KIND_SNAPSHOT, id, Campaign_Status.STATUS_STOP],
      [Kind.KIND_SNAPSHOT_END, '', Campaign_Status.STATUS_UNSPECIFIED],
      [Kind.KIND_CHANGE, id, Campaign_Status.STATUS_RUN],
    ]);
    assert.equal(typeof first.revision, 'bigint');
    assert.notEqual(first.timeline, '');

    // A change while nobody watches, then a watch that resumes where the first one stopped.
    await setStatus(client, customerId, id, Campaign_Status.STATUS_STOP);
    // Every change up to first.revision was yielded: a later watch resumes right after it.
    const resumed = watch(client, { customerId, afterRevision: first.revision, timeline: first.timeline }, { heartbeats: true });
    const later: [Kind, string, Campaign_Status, bigint][] = [];
    for await (const message of resumed) {
      later.push([message.kind, message.campaignId, message.status, message.revision]);
      if (message.kind === Kind.KIND_HEARTBEAT) break; // the stream has caught up
    }
    assert.deepEqual(later, [
      [Kind.KIND_CHANGE, id, Campaign_Status.STATUS_STOPPING, first.revision + 1n],
      [Kind.KIND_HEARTBEAT, '', Campaign_Status.STATUS_UNSPECIFIED, first.revision + 1n],
    ]);
  } finally {
    client.close();
  }
});

test('an error carries its google.rpc details, and a status without any gives empty ones', { timeout: 30_000 }, async () => {
  const client = createClient(address);
  try {
    const request = GetCampaignRequest.fromPartial({ customerId: randomUUID(), id: randomUUID() });
    let reason = '';
    try {
      await call<GetCampaignResponse>((done) => client.getCampaign(request, ...deadline(), done));
    } catch (err) {
      const details = errorDetails(err); // never throws; empty parts for a status without details
      if (details.code === status.NOT_FOUND) {
        console.log(details.info.reason, details.info.metadata); // CAMPAIGN_NOT_FOUND { ... }
      }
      assert.equal(details.info.domain, 'campaign-grpc');
      reason = details.info.reason;
    }
    assert.equal(reason, 'CAMPAIGN_NOT_FOUND');

    const invalid = CreateCampaignRequest.fromPartial({ campaign: { customerId: 'not-a-uuid', serviceLevel: 200 } });
    const bad = errorDetails(await rejection(call((done) => client.createCampaign(invalid, ...deadline(), done))));
    assert.equal(bad.code, status.INVALID_ARGUMENT);
    const fields = bad.badRequest.fieldViolations.map((violation) => violation.field);
    assert.ok(fields.includes('campaign.customer_id') && fields.includes('campaign.service_level'), String(fields));
  } finally {
    client.close();
  }

  // Nothing listens there: UNAVAILABLE from the client library, without details.
  const { server, port } = await serve({});
  server.forceShutdown();
  const nowhere = createClient(`127.0.0.1:${port}`);
  try {
    const request = GetCampaignRequest.fromPartial({ customerId: randomUUID(), id: randomUUID() });
    const details = errorDetails(await rejection(call((done) => nowhere.getCampaign(request, ...deadline(), done))));
    assert.equal(details.code, status.UNAVAILABLE);
    assert.equal(details.info.reason, '');
    assert.deepEqual(details.info.metadata, {});
    assert.deepEqual(details.badRequest.fieldViolations, []);
    assert.deepEqual(details.preconditionFailure.violations, []);
  } finally {
    nowhere.close();
  }
  assert.equal(errorDetails(new Error('not a gRPC error')).info.reason, '');
  assert.equal(errorDetails(undefined).code, status.UNKNOWN);
});

// A server of the test's own: each method answers UNAVAILABLE to its first attempt, then OK.
async function serve(attempts: Record<string, number>): Promise<{ server: Server; port: number }> {
  function flaky<Request, Response>(name: string, response: Response): handleUnaryCall<Request, Response> {
    return (_call, callback) => {
      attempts[name] = (attempts[name] ?? 0) + 1;
      if (attempts[name] === 1) callback({ code: status.UNAVAILABLE, details: 'try again' });
      else callback(null, response);
    };
  }
  const server = new Server();
  server.addService(CampaignServiceService, {
    getCampaign: flaky('getCampaign', GetCampaignResponse.fromPartial({ campaign: { name: 'second attempt' } })),
    createCampaign: flaky('createCampaign', {}),
  });
  return { server, port: await listen(server) };
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
}

test("the default client's retry policy retries UNAVAILABLE where it is safe, and only there", { timeout: 30_000 }, async () => {
  const attempts: Record<string, number> = {};
  const { server, port } = await serve(attempts);
  const client = createClient(`127.0.0.1:${port}`);
  try {
    const got = await call<GetCampaignResponse>((done) => client.getCampaign(GetCampaignRequest.create(), ...deadline(), done));
    assert.equal(got.campaign?.name, 'second attempt');
    // CreateCampaign is not retried by the channel: without a request_id it could create twice.
    const create = CreateCampaignRequest.create();
    const failed = errorDetails(await rejection(call((done) => client.createCampaign(create, ...deadline(), done))));
    assert.equal(failed.code, status.UNAVAILABLE);
    assert.deepEqual(attempts, { getCampaign: 2, createCampaign: 1 });
  } finally {
    client.close();
    server.forceShutdown();
  }
});

// A server of the test's own with only WatchStatus, and a default client of it.
async function watchServer(watchStatus: handleServerStreamingCall<WatchStatusRequest, WatchStatusResponse>) {
  const server = new Server();
  server.addService(CampaignServiceService, { watchStatus });
  return { server, client: createClient(`127.0.0.1:${await listen(server)}`) };
}

test('a watch reconnects after UNAVAILABLE and resumes after the last revision it yielded', { timeout: 30_000 }, async () => {
  // A server of the test's own whose every stream sends the change after the request's
  // revision, then ends UNAVAILABLE, as a server shutting down does.
  const requests: [bigint, string][] = [];
  const watchStatus: handleServerStreamingCall<WatchStatusRequest, WatchStatusResponse> = (stream) => {
    const { afterRevision, timeline } = stream.request;
    requests.push([afterRevision, timeline]);
    stream.write(WatchStatusResponse.fromPartial({ kind: Kind.KIND_CHANGE, revision: afterRevision + 1n, timeline: 't1' }));
    stream.emit('error', { code: status.UNAVAILABLE, details: 'shutting down' });
  };
  const { server, client } = await watchServer(watchStatus);
  try {
    const followed = watch(client, { customerId: randomUUID(), afterRevision: 5n });
    const revisions: bigint[] = [];
    for await (const message of followed) {
      revisions.push(message.revision);
      if (revisions.length === 3) break;
    }
    assert.deepEqual(revisions, [6n, 7n, 8n]);
    assert.deepEqual(requests, [[5n, ''], [6n, 't1'], [7n, 't1']]);
    assert.equal(followed.revision, 8n);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('a watch takes a stream silent for three heartbeat intervals for dead, and resumes', { timeout: 30_000 }, async () => {
  const requests: bigint[] = [];
  const { server, client } = await watchServer((stream) => {
    requests.push(stream.request.afterRevision);
    if (requests.length === 1) {
      // A 0.1 s heartbeat announced, then nothing more, as from a paused server.
      const heartbeatInterval = { seconds: 0n, nanos: 100_000_000 };
      stream.write(WatchStatusResponse.fromPartial({ kind: Kind.KIND_SNAPSHOT_END, revision: 9n, heartbeatInterval }));
    } else {
      stream.write(WatchStatusResponse.fromPartial({ kind: Kind.KIND_CHANGE, revision: 10n }));
    }
  });
  try {
    const seen: [Kind, bigint][] = [];
    for await (const message of watch(client, { customerId: randomUUID() })) {
      seen.push([message.kind, message.revision]);
      if (message.kind === Kind.KIND_CHANGE) break;
    }
    assert.deepEqual(seen, [
      [Kind.KIND_SNAPSHOT_END, 9n],
      [Kind.KIND_CHANGE, 10n],
    ]);
    assert.deepEqual(requests, [0n, 9n]);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
