import campaign.v1.CampaignOuterClass.WatchStatusRequest;
import campaign.v1.CampaignOuterClass.WatchStatusResponse;
import campaign.v1.CampaignServiceGrpc;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import com.google.rpc.QuotaFailure;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * What a Java backend needs to call campaign.v1, and the code the README's Java section is
 * taken from: a channel with a token, the google.rpc details of an error, and a watch that
 * resumes after the last revision it handled.
 */
public final class CampaignClient {
  private CampaignClient() {}

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  /** A channel to the service at address; every call on it carries the token. */
  public static ManagedChannel channel(String address, String token) {
    Metadata headers = new Metadata();
    headers.put(AUTHORIZATION, "Bearer " + token);
    return ManagedChannelBuilder.forTarget(address)
        .usePlaintext() // loopback; elsewhere .useTransportSecurity() (the default)
        .intercept(MetadataUtils.newAttachHeadersInterceptor(headers))
        .build();
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
    public Status.Code code;
    public ErrorInfo info = ErrorInfo.getDefaultInstance(); // every error the server sends
    public BadRequest badRequest = BadRequest.getDefaultInstance(); // INVALID_ARGUMENT: every bad field
    public PreconditionFailure precondition = PreconditionFailure.getDefaultInstance(); // FAILED_PRECONDITION
    public QuotaFailure quota = QuotaFailure.getDefaultInstance(); // RESOURCE_EXHAUSTED past a server limit

    /** The ErrorInfo's reason: "" for a status without details. */
    public String reason() {
      return info.getReason();
    }

    /** The ErrorInfo's metadata: empty for a status without details. */
    public Map<String, String> metadata() {
      return info.getMetadataMap();
    }

    /** Decodes the details of an exception thrown by a call. */
    public static Details of(StatusRuntimeException error) throws InvalidProtocolBufferException {
      Details details = new Details();
      details.code = error.getStatus().getCode();
      com.google.rpc.Status status = StatusProto.fromThrowable(error);
      if (status == null) {
        return details;
      }
      for (Any detail : status.getDetailsList()) {
        if (detail.is(ErrorInfo.class)) {
          details.info = detail.unpack(ErrorInfo.class);
        } else if (detail.is(BadRequest.class)) {
          details.badRequest = detail.unpack(BadRequest.class);
        } else if (detail.is(PreconditionFailure.class)) {
          details.precondition = detail.unpack(PreconditionFailure.class);
        } else if (detail.is(QuotaFailure.class)) {
          details.quota = detail.unpack(QuotaFailure.class);
        }
      }
      return details;
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
