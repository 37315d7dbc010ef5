import { type ClientReadableStream, status } from '@grpc/grpc-js';
import {
  type CampaignServiceClient,
  WatchStatusRequest,
  type WatchStatusResponse,
  WatchStatusResponse_Kind,
} from './gen/campaign/v1/campaign';

/** What a watch reconnects after, and how long it waits. */
export interface WatchOptions {
  /** Also yield KIND_HEARTBEAT messages (hidden by default). */
  heartbeats?: boolean;
  /** How many heartbeat intervals without a message make a stream dead (3; the interval is the
   * one KIND_SNAPSHOT_END and KIND_HEARTBEAT announce, 10 s until the first). */
  silentIntervals?: number;
  /** Backoff between reconnects: 100 ms doubled up to 2 s, jittered. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

// A lost stream resumes after these; any other code ends the watch with it (OUT_OF_RANGE:
// the log no longer holds the revision, start again from a snapshot with afterRevision 0).
const RESUMED = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/**
 * A WatchStatus stream that reconnects by itself after UNAVAILABLE, RESOURCE_EXHAUSTED, a
 * lost connection or a silent stream, resuming after the last revision it yielded: its caller
 * sees every change exactly once. `revision` and `timeline` are where to resume a later watch
 * (`afterRevision` and `timeline` of its request). `close()` ends the iteration.
 */
export class Watch implements AsyncIterable<WatchStatusResponse> {
  revision: bigint;
  timeline: string;
  private readonly request: WatchStatusRequest;
  private call: ClientReadableStream<WatchStatusResponse> | undefined;
  private closed = false;
  private silent = false;

  constructor(
    private readonly client: CampaignServiceClient,
    request: Partial<WatchStatusRequest>,
    private readonly options: WatchOptions = {},
  ) {
    this.request = WatchStatusRequest.fromPartial(request);
    this.revision = this.request.afterRevision;
    this.timeline = this.request.timeline;
  }

  close(): void {
    this.closed = true;
    this.call?.cancel();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<WatchStatusResponse> {
    const { heartbeats = false, initialBackoffMs = 100, maxBackoffMs = 2_000 } = this.options;
    let backoff = initialBackoffMs;
    let interval = 10_000; // the server's heartbeat interval, once a message announced it
    try {
      while (!this.closed) {
        const request = { ...this.request, afterRevision: this.revision, timeline: this.timeline };
        const call = this.client.watchStatus(request);
        this.call = call;
        this.silent = false;
        let silence = this.watchSilence(call, interval);
        try {
          for await (const message of call as AsyncIterable<WatchStatusResponse>) {
            // Only the wait for the server counts, not the time the caller spends with a message.
            clearTimeout(silence);
            interval = intervalMs(message) ?? interval;
            backoff = initialBackoffMs;
            this.revision = message.revision;
            if (message.timeline) this.timeline = message.timeline;
            if (message.kind !== WatchStatusResponse_Kind.KIND_HEARTBEAT || heartbeats) {
              yield message;
              if (this.closed) return;
            }
            silence = this.watchSilence(call, interval);
          }
        } catch (err) {
          const code = (err as { code?: unknown }).code;
          if (this.closed) return;
          if (!this.silent && !(typeof code === 'number' && RESUMED.has(code))) throw err;
        } finally {
          clearTimeout(silence);
        }
        // The stream ended or broke: resume after a jittered backoff.
        await new Promise((resolve) => setTimeout(resolve, backoff * (0.5 + Math.random() / 2)));
        backoff = Math.min(backoff * 2, maxBackoffMs);
      }
    } finally {
      this.call?.cancel();
    }
  }

  // Cancels a stream that sends nothing for silentIntervals heartbeat intervals: a paused
  // server or a connection forgotten by a NAT sends no FIN or RST to say so.
  private watchSilence(call: ClientReadableStream<WatchStatusResponse>, ms: number): NodeJS.Timeout {
    return setTimeout(() => {
      this.silent = true;
      call.cancel();
    }, ms * (this.options.silentIntervals ?? 3));
  }
}

function intervalMs(message: WatchStatusResponse): number | undefined {
  const interval = message.heartbeatInterval;
  if (!interval || (interval.seconds === 0n && interval.nanos === 0)) return undefined;
  return Number(interval.seconds) * 1000 + interval.nanos / 1e6;
}

/** Follows WatchStatus from request (afterRevision 0: a snapshot first), reconnecting and
 * resuming by itself; `for await (const message of watch(client, { customerId }))`. */
export function watch(
  client: CampaignServiceClient,
  request: Partial<WatchStatusRequest>,
  options?: WatchOptions,
): Watch {
  return new Watch(client, request, options);
}
