// A program that uses the campaign-grpc-client jar as a Maven user gets it, with nothing of this
// repository but the jar (tests/e2e/test_java_package.py compiles and runs it). It prints what it
// saw, a line a fact, for the test to check.
//
//   java Consumer ADDRESS TOKEN

package example;

import io.github.campaigngrpc.campaign.v1.Campaign;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc.CampaignServiceBlockingStub;
import io.github.campaigngrpc.campaign.v1.CreateCampaignRequest;
import io.github.campaigngrpc.campaign.v1.CreateCampaignResponse;
import io.github.campaigngrpc.campaign.v1.GetCampaignRequest;
import io.github.campaigngrpc.campaign.v1.GetCampaignResponse;
import io.github.campaigngrpc.campaign.v1.WatchStatusRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusResponse;
import io.github.campaigngrpc.client.CampaignClient;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

public final class Consumer {
  private Consumer() {}

  public static void main(String[] args) throws Exception {
    String address = args[0], token = args[1];
    ManagedChannel channel = CampaignClient.channelBuilder(address)
        .usePlaintext()
        .intercept(CampaignClient.bearerToken(token))
        .build();
    try {
      CampaignServiceBlockingStub stub = CampaignServiceGrpc.newBlockingStub(channel);
      String customer = UUID.randomUUID().toString();
      watchWithResume(stub, customer);
      errorDetails(stub);
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
    retries();
  }

  static Campaign create(CampaignServiceBlockingStub stub, String customer, String name) {
    return stub.withDeadlineAfter(10, TimeUnit.SECONDS)
        .createCampaign(CreateCampaignRequest.newBuilder()
            .setCampaign(Campaign.newBuilder()
                .setCustomerId(customer)
                .setType(Campaign.Type.TYPE_CALL)
                .setName(name))
            .setRequestId(UUID.randomUUID().toString())
            .build())
        .getCampaign();
  }

  /** Ends a watch from its handler once it has what it came for. */
  static final class Enough extends RuntimeException {
    Enough() {
      super(null, null, false, false);
    }
  }

  /**
   * A watch from the start sees the campaign created before it (snapshot) and one created while
   * it runs (change); a second one, from the last revision the first handled, only what came
   * after.
   */
  static void watchWithResume(CampaignServiceBlockingStub stub, String customer) throws Exception {
    Campaign before = create(stub, customer, "before");
    System.out.println("created " + before.getId());
    WatchStatusRequest request = WatchStatusRequest.newBuilder().setCustomerId(customer).build();
    List<WatchStatusResponse> first = new ArrayList<>();
    String[] during = new String[1];
    try {
      CampaignClient.watch(stub, request, item -> {
        if (item.getKind() == WatchStatusResponse.Kind.KIND_HEARTBEAT) {
          return;
        }
        first.add(item);
        if (item.getKind() == WatchStatusResponse.Kind.KIND_SNAPSHOT_END) {
          during[0] = create(stub, customer, "during").getId();
        } else if (item.getKind() == WatchStatusResponse.Kind.KIND_CHANGE) {
          throw new Enough();
        }
      });
    } catch (Enough enough) {
      // seen
    }
    System.out.println("created " + during[0]);
    for (WatchStatusResponse item : first) {
      System.out.println("first-watch " + item.getKind() + " " + item.getCampaignId());
    }
    WatchStatusResponse last = first.get(first.size() - 1);
    Campaign after = create(stub, customer, "after");
    System.out.println("created " + after.getId());

    WatchStatusRequest resume = request.toBuilder()
        .setAfterRevision(last.getRevision())
        .setTimeline(last.getTimeline())
        .build();
    try {
      CampaignClient.watch(stub, resume, item -> {
        System.out.println("resumed-watch " + item.getKind() + " " + item.getCampaignId());
        if (item.getKind() == WatchStatusResponse.Kind.KIND_HEARTBEAT) {
          throw new Enough(); // caught up: the replay is over
        }
      });
    } catch (Enough enough) {
      // seen
    }
  }

  /**
   * The details of an error the server sends, and of errors it did not: none, and no exception.
   */
  static void errorDetails(CampaignServiceBlockingStub stub) throws Exception {
    GetCampaignRequest unknown = GetCampaignRequest.newBuilder()
        .setCustomerId(UUID.randomUUID().toString())
        .setId(UUID.randomUUID().toString())
        .build();
    try {
      stub.withDeadlineAfter(10, TimeUnit.SECONDS).getCampaign(unknown);
    } catch (StatusRuntimeException e) {
      CampaignClient.Details details = CampaignClient.Details.of(e);
      System.out.println("not-found " + details.code + " " + details.reason() + " " + details.info.getDomain());
    }

    int port;
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = socket.getLocalPort(); // nothing listens on it once closed
    }
    ManagedChannel down = CampaignClient.channelBuilder("127.0.0.1:" + port).usePlaintext().build();
    try {
      CampaignServiceGrpc.newBlockingStub(down).withDeadlineAfter(10, TimeUnit.SECONDS).getCampaign(unknown);
    } catch (StatusRuntimeException e) {
      CampaignClient.Details details = CampaignClient.Details.of(e);
      System.out.println("unavailable " + details.code
          + " reason=" + details.reason().isEmpty()
          + " metadata=" + details.metadata().isEmpty()
          + " violations=" + (details.badRequest.getFieldViolationsCount()
              + details.precondition.getViolationsCount() + details.quota.getViolationsCount()));
    } finally {
      down.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }

    CampaignClient.Details other = CampaignClient.Details.of(new IllegalStateException("no status"));
    System.out.println("not-a-status " + other.code + " reason=" + other.reason().isEmpty());
  }

  /**
   * The retry policy of the package's channel, seen from a server that answers UNAVAILABLE to
   * the first two attempts of every call: GetCampaign (safe to repeat) succeeds at the third,
   * CreateCampaign (not in the policy) fails at the first.
   */
  static void retries() throws Exception {
    AtomicInteger gets = new AtomicInteger(), creates = new AtomicInteger();
    Server server = ServerBuilder.forPort(0)
        .addService(new CampaignServiceGrpc.CampaignServiceImplBase() {
          @Override
          public void getCampaign(GetCampaignRequest request, StreamObserver<GetCampaignResponse> reply) {
            if (gets.incrementAndGet() <= 2) {
              reply.onError(Status.UNAVAILABLE.withDescription("not yet").asRuntimeException());
              return;
            }
            reply.onNext(GetCampaignResponse.newBuilder()
                .setCampaign(Campaign.newBuilder().setId(request.getId()))
                .build());
            reply.onCompleted();
          }

          @Override
          public void createCampaign(CreateCampaignRequest request, StreamObserver<CreateCampaignResponse> reply) {
            creates.incrementAndGet();
            reply.onError(Status.UNAVAILABLE.withDescription("not yet").asRuntimeException());
          }
        })
        .build()
        .start();
    ManagedChannel channel = CampaignClient.channelBuilder("127.0.0.1:" + server.getPort()).usePlaintext().build();
    try {
      CampaignServiceBlockingStub stub = CampaignServiceGrpc.newBlockingStub(channel);
      String id = stub.withDeadlineAfter(10, TimeUnit.SECONDS)
          .getCampaign(GetCampaignRequest.newBuilder().setId("retried").build())
          .getCampaign()
          .getId();
      System.out.println("get " + id + " attempts=" + gets.get());
      try {
        create(stub, UUID.randomUUID().toString(), "not retried");
      } catch (StatusRuntimeException e) {
        System.out.println("create " + e.getStatus().getCode() + " attempts=" + creates.get());
      }
    } finally {
      channel.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
      server.shutdownNow().awaitTermination(10, TimeUnit.SECONDS);
    }
  }
}
