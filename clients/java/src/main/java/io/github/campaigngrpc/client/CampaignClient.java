package io.github.campaigngrpc.client;

import com.google.gson.Gson;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import com.google.rpc.QuotaFailure;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.WatchStatusRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusResponse;
import io.grpc.ClientInterceptor;
import io.grpc.Context;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * What a Java backend needs to call campaign.v1: a channel with the service's retry policy and a
 * token, the google.rpc details of an error, and a watch that resumes after the last revision it
 * handled.
 */
public final class CampaignClient {
  private CampaignClient() {}

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  /**
   * The service config of campaign.v1 (service_config.json, made from the contract): a
   * retryPolicy for the methods that are safe to repeat whatever the request, as
   * ManagedChannelBuilder.defaultServiceConfig takes it (numbers as Double). A new map each time.
   */
  @SuppressWarnings("unchecked")
  public static Map<String, ?> serviceConfig() {
    try (InputStream in = CampaignClient.class.getResourceAsStream("service_config.json")) {
      if (in == null) {
        throw new IllegalStateException("service_config.json is missing beside CampaignClient");
      }
      Reader reader = new InputStreamReader(in, StandardCharsets.UTF_8);
      return new Gson().fromJson(reader, Map.class);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /**
   * A channel builder for target with the service's retry policy: UNAVAILABLE is retried, up to
   * 5 attempts in all, for the methods that are safe to repeat. TLS unless told otherwise.
   */
  public static ManagedChannelBuilder<?> channelBuilder(String target) {
    return ManagedChannelBuilder.forTarget(target).defaultServiceConfig(serviceConfig()).enableRetry();
  }

  /** Sends "authorization: Bearer token" with every call. */
  public static ClientInterceptor bearerToken(String token) {
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    return MetadataUtils.newAttachHeadersInterceptor(headers);
  }

  /**
   * The google.rpc details of an error. The server puts an ErrorInfo in every error it sends; a
   * status made by the client library or the transport (UNAVAILABLE when the server cannot be
   * reached, DEADLINE_EXCEEDED of the client's own deadline, CANCELLED of a cancelled call or of
   * a request over the client's own size limit) carries none. No field is ever null: a detail
   * the status lacks is its default instance, so that reason() is "" and the lists and
   * metadata() are empty.
   */
  public static final class Details {
    public final Status.Code code;
    public final ErrorInfo info; // every error the server sends
    public final BadRequest badRequest; // INVALID_ARGUMENT: every bad field
    public final PreconditionFailure precondition; // FAILED_PRECONDITION
    public final QuotaFailure quota; // RESOURCE_EXHAUSTED past a server limit

    private Details(Status.Code code, com.google.rpc.Status status) {
      this.code = code;
      this.info = unpack(status, ErrorInfo.class, ErrorInfo.getDefaultInstance());
      this.badRequest = unpack(status, BadRequest.class, BadRequest.getDefaultInstance());
      this.precondition = unpack(status, PreconditionFailure.class, PreconditionFailure.getDefaultInstance());
      this.quota = unpack(status, QuotaFailure.class, QuotaFailure.getDefaultInstance());
    }

    /** The ErrorInfo's reason: "" for a status without details. */
    public String reason() {
      return info.getReason();
    }

    /** The ErrorInfo's metadata: empty for a status without details. */
    public Map<String, String> metadata() {
      return info.getMetadataMap();
    }

    /**
     * Decodes the details of what a call threw (StatusRuntimeException, StatusException); never
     * throws: what cannot be decoded reads as absent, and the code of any other error is UNKNOWN.
     */
    public static Details of(Throwable error) {
      com.google.rpc.Status status;
      try {
        status = StatusProto.fromThrowable(error);
      } catch (RuntimeException undecodable) { // details that do not parse, or of another code
        status = null;
      }
      return new Details(Status.fromThrowable(error).getCode(), status);
    }

    private static <T extends com.google.protobuf.Message> T unpack(
        com.google.rpc.Status status, Class<T> type, T absent) {
      if (status == null) {
        return absent;
      }
      for (Any detail : status.getDetailsList()) {
        if (detail.is(type)) {
          try {
            return detail.unpack(type);
          } catch (InvalidProtocolBufferException e) {
            return absent;
          }
        }
      }
      return absent;
    }
  }

  /** What a watch does with each message. */
  public interface Handler {
    void handle(WatchStatusResponse item) throws InterruptedException;

    /**
     * The stream was cut and is called again: the changes up to the next KIND_HEARTBEAT are a
     * replay of what happened meanwhile.
     */
    default void resumed() throws InterruptedException {}
  }

  /**
   * Follows WatchStatus as request asks until the thread is interrupted or handler throws,
   * calling handler with every message in order. When the stream ends with UNAVAILABLE (a
   * server shutting down or gone), RESOURCE_EXHAUSTED (fallen too far behind), or goes silent
   * for three heartbeat intervals, it calls again with the last revision handled as
   * after_revision (and its timeline): handler sees every change once, across restarts of the
   * server, and is told of each resume before its replay. Any other status is thrown, such as
   * OUT_OF_RANGE (the log no longer holds that revision: start again from a snapshot).
   */
  public static void watch(
      CampaignServiceGrpc.CampaignServiceBlockingStub stub,
      WatchStatusRequest request,
      Handler handler)
      throws InterruptedException {
    WatchStatusRequest.Builder resume = request.toBuilder();
    Duration silence = Duration.ofSeconds(30); // until the server says its heartbeat interval
    long backoffMillis = 100;
    boolean first = true;
    ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();
    try {
      while (true) {
        if (!first) {
          handler.resumed();
        }
        first = false;
        boolean handled = false;
        Context.CancellableContext stream = Context.current().withCancellation();
        ScheduledFuture<?> quiet = timer.schedule(
            () -> stream.cancel(null), silence.toMillis(), TimeUnit.MILLISECONDS);
        Context previous = stream.attach();
        try {
          Iterator<WatchStatusResponse> items = stub.watchStatus(resume.build());
          while (true) {
            WatchStatusResponse item;
            try {
              if (!items.hasNext()) {
                throw Status.UNAVAILABLE.withDescription("the stream ended").asRuntimeException();
              }
              item = items.next();
            } catch (StatusRuntimeException e) {
              Status.Code code = e.getStatus().getCode();
              if (Thread.currentThread().isInterrupted()) {
                throw new InterruptedException("watch interrupted");
              }
              if (code != Status.Code.UNAVAILABLE
                  && code != Status.Code.RESOURCE_EXHAUSTED
                  && code != Status.Code.CANCELLED) { // CANCELLED: silent
                throw e;
              }
              break;
            }
            quiet.cancel(false);
            if (item.hasHeartbeatInterval()) {
              silence = Duration.ofSeconds(
                      item.getHeartbeatInterval().getSeconds(), item.getHeartbeatInterval().getNanos())
                  .multipliedBy(3);
            }
            handler.handle(item);
            handled = true;
            // Every revision the stream sends is a resume point, snapshot items included.
            resume.setAfterRevision(item.getRevision()).setTimeline(item.getTimeline());
            quiet = timer.schedule(
                () -> stream.cancel(null), silence.toMillis(), TimeUnit.MILLISECONDS);
          }
        } finally {
          quiet.cancel(false);
          stream.detach(previous);
          stream.cancel(null);
        }
        if (handled) {
          backoffMillis = 100;
        }
        Thread.sleep(backoffMillis);
        backoffMillis = Math.min(backoffMillis * 2, 5000);
      }
    } finally {
      timer.shutdownNow();
    }
  }
}
