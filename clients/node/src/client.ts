import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ChannelCredentials, type ChannelOptions, credentials } from '@grpc/grpc-js';
import { CampaignServiceClient } from './gen/campaign/v1/campaign';

/** The retry policy (a gRPC service config): the package's service_config.json. A plain
 * channel takes it as its 'grpc.service_config' option. */
export const serviceConfig: string = readFileSync(join(__dirname, '..', 'service_config.json'), 'utf8');

/** How a channel made by createClient is set up. */
export interface ClientOptions {
  /** Insecure (loopback) unless given, e.g. credentials.createSsl(rootCa). */
  credentials?: ChannelCredentials;
  /** More channel options; they win over the defaults. */
  channelOptions?: ChannelOptions;
}

/** The channel options of createClient: the retry policy, and keepalive PINGs so that a call
 * on a dead connection fails UNAVAILABLE instead of waiting for ever (one after 20 s without
 * traffic while a call is open, the connection dropped 10 s after a PING goes unanswered;
 * none while no call is open, which the server would count against the client). */
export const defaultChannelOptions: ChannelOptions = {
  'grpc.service_config': serviceConfig,
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 0,
};

/** A client of the service at address ("host:port") whose channel retries UNAVAILABLE where
 * the contract says that is safe. */
export function createClient(address: string, options: ClientOptions = {}): CampaignServiceClient {
  return new CampaignServiceClient(address, options.credentials ?? credentials.createInsecure(), {
    ...defaultChannelOptions,
    ...options.channelOptions,
  });
}
