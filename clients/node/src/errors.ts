import { status } from '@grpc/grpc-js';
import {
  BadRequest,
  ErrorInfo,
  PreconditionFailure,
  QuotaFailure,
} from './gen/google/rpc/error_details';
import { Status } from './gen/google/rpc/status';

/** The google.rpc details of a failed call. The server puts an ErrorInfo in every error it
 * sends; a status made by the client library or the transport (UNAVAILABLE when the server
 * cannot be reached, DEADLINE_EXCEEDED of the client's own deadline, CANCELLED) carries none.
 * No part is ever undefined: a detail the status lacks is an empty message, so that
 * info.reason is "" and the lists and info.metadata are empty. */
export interface ErrorDetails {
  code: status;
  message: string;
  /** Every error the server sends: reason, domain, metadata. */
  info: ErrorInfo;
  /** INVALID_ARGUMENT: every bad field. */
  badRequest: BadRequest;
  /** FAILED_PRECONDITION: every unmet condition. */
  preconditionFailure: PreconditionFailure;
  /** RESOURCE_EXHAUSTED past a server limit. */
  quotaFailure: QuotaFailure;
}

const TYPE_PREFIX = 'type.googleapis.com/google.rpc.';

/** Decodes the grpc-status-details-bin of an error a call failed with. Never throws: for a
 * status without details (or anything that is not a gRPC error) the details are empty. */
export function errorDetails(err: unknown): ErrorDetails {
  const { code, details, metadata } = (err ?? {}) as {
    code?: unknown;
    details?: unknown;
    metadata?: unknown;
  };
  const result: ErrorDetails = {
    code: typeof code === 'number' ? code : status.UNKNOWN,
    message: typeof details === 'string' ? details : err instanceof Error ? err.message : '',
    info: ErrorInfo.create(),
    badRequest: BadRequest.create(),
    preconditionFailure: PreconditionFailure.create(),
    quotaFailure: QuotaFailure.create(),
  };
  // Any Metadata, also one of another copy of @grpc/grpc-js than this package's.
  const get = (metadata as { get?: unknown } | undefined)?.get;
  const [bin] =
    typeof get === 'function' ? (get.call(metadata, 'grpc-status-details-bin') as unknown[]) : [];
  if (!(bin instanceof Uint8Array)) return result;
  try {
    const decoded = Status.decode(bin);
    result.message = decoded.message;
    for (const any of decoded.details) {
      switch (any.typeUrl) {
        case `${TYPE_PREFIX}ErrorInfo`:
          result.info = ErrorInfo.decode(any.value);
          break;
        case `${TYPE_PREFIX}BadRequest`:
          result.badRequest = BadRequest.decode(any.value);
          break;
        case `${TYPE_PREFIX}PreconditionFailure`:
          result.preconditionFailure = PreconditionFailure.decode(any.value);
          break;
        case `${TYPE_PREFIX}QuotaFailure`:
          result.quotaFailure = QuotaFailure.decode(any.value);
          break;
      }
    }
  } catch {
    // Malformed details: what was decoded before stays, the rest stays empty.
  }
  return result;
}
