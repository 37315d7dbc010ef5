// campaign.v1 from Java (grpc-java and the campaign-grpc-client jar that `make dist-java`
// builds) against real servers, as a backend such as the dialer uses it. `make test` compiles
// and runs it (tests/e2e/test_java_client.py), with CAMPAIGN_GRPC_COMMAND naming the campaign-grpc
// command.

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.google.protobuf.FieldMask;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import com.google.rpc.BadRequest;
import com.google.rpc.PreconditionFailure;
import io.github.campaigngrpc.campaign.v1.Action;
import io.github.campaigngrpc.campaign.v1.Campaign;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc.CampaignServiceBlockingStub;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.ConfirmDrainedRequest;
import io.github.campaigngrpc.campaign.v1.CreateCampaignRequest;
import io.github.campaigngrpc.campaign.v1.GetCampaignRequest;
import io.github.campaigngrpc.campaign.v1.ListCampaignsRequest;
import io.github.campaigngrpc.campaign.v1.ListCampaignsResponse;
import io.github.campaigngrpc.campaign.v1.UpdateCampaignRequest;
import io.github.campaigngrpc.campaign.v1.UpdateCampaignStatusRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusResponse;
import io.github.campaigngrpc.campaign.v1.WatchView;
import io.github.campaigngrpc.client.CampaignClient;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.TimeUnit;
import org.junit.After;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

public class CampaignClientTest {
  private static final String DOMAIN = "campaign-grpc";

  /** Serves the tests that need nothing but a server; each works for customers of its own. */
  private static ServerProcess shared;

  private final List<AutoCloseable> closing = new ArrayList<>();

  @BeforeClass
  public static void startSharedServer() throws Exception {
    shared = new ServerProcess(Files.createTempDirectory("campaign-java-client-"));
  }

  @AfterClass
  public static void stopSharedServer() throws Exception {
    shared.close();
  }

  @After
  public void closeEverything() throws Exception {
    for (int i = closing.size() - 1; i >= 0; i--) {
      closing.get(i).close();
    }
  }

  private CampaignServiceBlockingStub connect(ServerProcess server) {
    ManagedChannel channel = ServerProcess.channel(server.address, ServerProcess.TOKEN);
    closing.add(channel::shutdownNow);
    return CampaignServiceGrpc.newBlockingStub(channel);
  }

  private ServerProcess startServer() throws Exception {
    ServerProcess server = new ServerProcess(Files.createTempDirectory("campaign-java-server-"));
    closing.add(server);
    return server;
  }

  /** A deadline for one call: withDeadlineAfter counts from now, so it is set call by call. */
  static CampaignServiceBlockingStub timed(CampaignServiceBlockingStub stub) {
    return stub.withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  static String newId() {
    return UUID.randomUUID().toString();
  }

  static Campaign.Builder runnable(String customer) {
    Struct option =
        Struct.newBuilder().putFields("text", Value.newBuilder().setStringValue("hello").build()).build();
    return Campaign.newBuilder()
        .setCustomerId(customer)
        .setType(Campaign.Type.TYPE_CALL)
        .setName("java promo")
        .setOutplanId(newId())
        .setOutdialId(newId())
        .addActions(Action.newBuilder().setType("answer"))
        .addActions(Action.newBuilder().setType("talk").setOption(option));
  }

  static Campaign create(CampaignServiceBlockingStub stub, Campaign.Builder campaign) {
    return timed(stub)
        .createCampaign(CreateCampaignRequest.newBuilder().setCampaign(campaign).setRequestId(newId()).build())
        .getCampaign();
  }

  static Campaign setStatus(CampaignServiceBlockingStub stub, Campaign c, Campaign.Status status) {
    return timed(stub)
        .updateCampaignStatus(UpdateCampaignStatusRequest.newBuilder()
            .setCustomerId(c.getCustomerId())
            .setId(c.getId())
            .setStatus(status)
            .build())
        .getCampaign();
  }

  static Campaign get(CampaignServiceBlockingStub stub, Campaign c) {
    return timed(stub)
        .getCampaign(GetCampaignRequest.newBuilder().setCustomerId(c.getCustomerId()).setId(c.getId()).build())
        .getCampaign();
  }

  /** A call that must fail with code and an ErrorInfo of ours with reason. */
  interface Call {
    void run();
  }

  static CampaignClient.Details failsWith(Status.Code code, String reason, Call call) throws Exception {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      CampaignClient.Details details = CampaignClient.Details.of(e);
      assertEquals(e.toString(), code, details.code);
      assertEquals(e.toString(), DOMAIN, details.info.getDomain());
      assertEquals(reason, details.reason());
      return details;
    }
    throw new AssertionError("the call succeeded; expected " + code + " " + reason);
  }

  @Test
  public void createRetriedWithItsRequestIdCreatesOnce() {
    CampaignServiceBlockingStub stub = connect(shared);
    String customer = newId();
    CreateCampaignRequest.Builder request =
        CreateCampaignRequest.newBuilder().setCampaign(runnable(customer)).setRequestId(newId());

    Campaign first = timed(stub).createCampaign(request.build()).getCampaign();
    // Its reply lost, the backend sends the create again, even with a body changed meanwhile.
    request.getCampaignBuilder().setName("changed before the retry");
    Campaign again = timed(stub).createCampaign(request.build()).getCampaign();

    assertEquals(first, again);
    assertEquals(36, first.getId().length());
    assertEquals(Campaign.Status.STATUS_STOP, first.getStatus());
    assertEquals("java promo", first.getName());
    assertEquals(Campaign.EndHandle.END_HANDLE_STOP, first.getEndHandle());
    assertTrue(first.hasTmCreate());
    assertTrue(!first.hasTmUpdate());
    assertNotEquals("", first.getActions(1).getId());
    assertEquals("hello", first.getActions(1).getOption().getFieldsOrThrow("text").getStringValue());

    assertEquals(first, get(stub, first));
    ListCampaignsResponse listed =
        timed(stub).listCampaigns(ListCampaignsRequest.newBuilder().setCustomerId(customer).build());
    assertEquals(1, listed.getCampaignsCount());
    assertEquals("", listed.getNextPageToken());
  }

  @Test
  public void getOfAnUnknownCampaignIsNotFound() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    failsWith(Status.Code.NOT_FOUND, "CAMPAIGN_NOT_FOUND", () -> timed(stub)
        .getCampaign(GetCampaignRequest.newBuilder().setCustomerId(newId()).setId(newId()).build()));
  }

  @Test
  public void listPagesThroughEveryCampaignOnceNewestFirst() {
    CampaignServiceBlockingStub stub = connect(shared);
    String customer = newId();
    List<String> created = new ArrayList<>();
    for (int i = 0; i < 250; i++) {
      // An outdial belongs to one live campaign; these never run.
      created.add(create(stub, runnable(customer).clearOutdialId()).getId());
    }

    List<String> listed = new ArrayList<>();
    int pages = 0;
    ListCampaignsRequest.Builder request = ListCampaignsRequest.newBuilder().setCustomerId(customer).setPageSize(40);
    while (true) {
      ListCampaignsResponse page = timed(stub).listCampaigns(request.build());
      assertTrue("a page of " + page.getCampaignsCount(), page.getCampaignsCount() <= 40);
      page.getCampaignsList().forEach(c -> listed.add(c.getId()));
      if (++pages == 2) {
        // A campaign created during the walk is newer than where it is: it is not listed.
        create(stub, Campaign.newBuilder().setCustomerId(customer).setType(Campaign.Type.TYPE_FLOW));
      }
      if (page.getNextPageToken().isEmpty()) {
        break;
      }
      request.setPageToken(page.getNextPageToken());
    }

    assertEquals(7, pages);
    List<String> newestFirst = new ArrayList<>(created);
    java.util.Collections.reverse(newestFirst);
    assertEquals(newestFirst, listed);
  }

  @Test
  public void updateChangesTheMaskedFieldsAndAStaleEtagIsRefused() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    String customer = newId();
    Campaign c = create(stub, runnable(customer));

    Campaign updated = timed(stub)
        .updateCampaign(UpdateCampaignRequest.newBuilder()
            .setCampaign(Campaign.newBuilder()
                .setCustomerId(customer)
                .setId(c.getId())
                .setEtag(c.getEtag())
                .setName("renamed")
                .setDetail("not in the mask"))
            .setUpdateMask(FieldMask.newBuilder().addPaths("name"))
            .build())
        .getCampaign();
    assertEquals("renamed", updated.getName());
    assertEquals(c.getDetail(), updated.getDetail());
    assertEquals(c.getActionsList(), updated.getActionsList());
    assertNotEquals(c.getEtag(), updated.getEtag());
    assertTrue(updated.hasTmUpdate());

    // A second writer still holding the first etag is refused, and told the current one.
    UpdateCampaignRequest.Builder stale = UpdateCampaignRequest.newBuilder()
        .setCampaign(Campaign.newBuilder().setCustomerId(customer).setId(c.getId()).setEtag(c.getEtag()).setName("stale"))
        .setUpdateMask(FieldMask.newBuilder().addPaths("name"));
    CampaignClient.Details details =
        failsWith(Status.Code.ABORTED, "ETAG_MISMATCH", () -> timed(stub).updateCampaign(stale.build()));
    String current = details.metadata().get("etag");
    assertEquals(updated.getEtag(), current);
    assertEquals(updated, get(stub, c));

    // Having looked again, it sends its change with the current etag.
    stale.getCampaignBuilder().setEtag(current);
    assertEquals("stale", timed(stub).updateCampaign(stale.build()).getCampaign().getName());
  }

  @Test
  public void runWithoutAnOutplanNamesTheUnmetCondition() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    Campaign c = create(stub, runnable(newId()).clearOutplanId());

    CampaignClient.Details details = failsWith(Status.Code.FAILED_PRECONDITION, "RUN_CONDITIONS_UNMET",
        () -> setStatus(stub, c, Campaign.Status.STATUS_RUN));
    assertEquals(1, details.precondition.getViolationsCount());
    PreconditionFailure.Violation violation = details.precondition.getViolations(0);
    assertEquals("OUTPLAN_MISSING", violation.getType());
    assertEquals("outplan_id", violation.getSubject());
    assertNotEquals("", violation.getDescription());
    assertEquals(Campaign.Status.STATUS_STOP, get(stub, c).getStatus());
  }

  @Test
  public void invalidArgumentNamesEveryBadField() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    CampaignClient.Details details = failsWith(Status.Code.INVALID_ARGUMENT, "INVALID_ARGUMENT",
        () -> timed(stub).createCampaign(CreateCampaignRequest.newBuilder()
            .setCampaign(Campaign.newBuilder()
                .setCustomerId("not-a-uuid")
                .setType(Campaign.Type.TYPE_CALL)
                .setServiceLevel(200))
            .build()));
    assertNotEquals("no BadRequest", 0, details.badRequest.getFieldViolationsCount());
    TreeSet<String> fields = new TreeSet<>();
    for (BadRequest.FieldViolation violation : details.badRequest.getFieldViolationsList()) {
      assertNotEquals("", violation.getDescription());
      fields.add(violation.getField());
    }
    assertEquals("[campaign.customer_id, campaign.service_level]", fields.toString());
  }

  /** A call that must fail with code and no details, which read as empty. */
  static void failsWithoutDetails(Status.Code code, Call call) throws Exception {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      CampaignClient.Details details = CampaignClient.Details.of(e);
      assertEquals(e.toString(), code, details.code);
      assertEquals(e.toString(), "", details.reason());
      assertEquals(Map.of(), details.metadata());
      assertEquals("", details.info.getDomain());
      assertEquals(0, details.badRequest.getFieldViolationsCount());
      assertEquals(0, details.precondition.getViolationsCount());
      assertEquals(0, details.quota.getViolationsCount());
      return;
    }
    throw new AssertionError("the call succeeded; expected " + code);
  }

  /**
   * A status that the client library or the transport makes has no details: Details.of gives its
   * code, an empty reason and metadata, and no null field; one the server sends keeps its own.
   */
  @Test
  public void detailsOfAStatusTheServerDidNotSendAreEmpty() throws Exception {
    GetCampaignRequest request = GetCampaignRequest.newBuilder().setCustomerId(newId()).setId(newId()).build();

    // A server that is down: nothing listens on the port any more.
    int port;
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = socket.getLocalPort();
    }
    ManagedChannel down = ServerProcess.channel("127.0.0.1:" + port, ServerProcess.TOKEN);
    closing.add(down::shutdownNow);
    failsWithoutDetails(Status.Code.UNAVAILABLE,
        () -> timed(CampaignServiceGrpc.newBlockingStub(down)).getCampaign(request));

    CampaignServiceBlockingStub stub = connect(shared);
    // An error the server sends: its reason and metadata (and the channel is connected).
    Campaign c = create(stub, runnable(newId()));
    UpdateCampaignRequest update = UpdateCampaignRequest.newBuilder()
        .setCampaign(Campaign.newBuilder()
            .setCustomerId(c.getCustomerId())
            .setId(c.getId())
            .setEtag(c.getEtag())
            .setName("renamed"))
        .setUpdateMask(FieldMask.newBuilder().addPaths("name"))
        .build();
    Campaign updated = timed(stub).updateCampaign(update).getCampaign();
    CampaignClient.Details details = failsWith(Status.Code.ABORTED, "ETAG_MISMATCH",
        () -> timed(stub).updateCampaign(update)); // with the etag it replaced
    assertEquals(updated.getEtag(), details.metadata().get("etag"));

    // The client's own deadline, over before an answer could come.
    failsWithoutDetails(Status.Code.DEADLINE_EXCEEDED,
        () -> stub.withDeadlineAfter(1, TimeUnit.NANOSECONDS).getCampaign(request));

    // A request over the client's own limit on what it sends: refused before it is sent, as
    // CANCELLED "Failed to stream message" (grpc-java; grpc-go says RESOURCE_EXHAUSTED). On a
    // channel not connected yet, grpc-java 1.41 ends such a call only at its deadline.
    failsWithoutDetails(Status.Code.CANCELLED,
        () -> timed(stub).withMaxOutboundMessageSize(10).getCampaign(request));
  }

  @Test
  public void aCallWithoutAKnownTokenIsUnauthenticated() throws Exception {
    ManagedChannel bare = ManagedChannelBuilder.forTarget(shared.address).usePlaintext().build();
    closing.add(bare::shutdownNow);
    GetCampaignRequest request = GetCampaignRequest.newBuilder().setCustomerId(newId()).setId(newId()).build();
    failsWith(Status.Code.UNAUTHENTICATED, "TOKEN_MISSING",
        () -> timed(CampaignServiceGrpc.newBlockingStub(bare)).getCampaign(request));

    ManagedChannel other = ServerProcess.channel(shared.address, ServerProcess.randomHex(32));
    closing.add(other::shutdownNow);
    failsWith(Status.Code.UNAUTHENTICATED, "TOKEN_UNKNOWN",
        () -> timed(CampaignServiceGrpc.newBlockingStub(other)).getCampaign(request));
  }

  @Test
  public void runStopAndConfirmTheDrain() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    String customer = newId();
    Campaign c = create(stub, runnable(customer));
    Watcher w = watch(stub, WatchStatusRequest.newBuilder()
        .setCustomerId(customer)
        .setCampaignId(c.getId())
        .setView(WatchView.WATCH_VIEW_FULL)
        .build(), false);
    WatchStatusResponse snapshot = w.next();
    assertEquals(WatchStatusResponse.Kind.KIND_SNAPSHOT, snapshot.getKind());
    assertEquals(c, snapshot.getCampaign());
    WatchStatusResponse end = w.next();
    assertEquals(WatchStatusResponse.Kind.KIND_SNAPSHOT_END, end.getKind());
    assertEquals(500_000_000, end.getHeartbeatInterval().getNanos());

    assertEquals(Campaign.Status.STATUS_RUN, setStatus(stub, c, Campaign.Status.STATUS_RUN).getStatus());
    // STOP only asks: the dialer drains the campaign's calls, then confirms this stop.
    Campaign stopping = setStatus(stub, c, Campaign.Status.STATUS_STOP);
    assertEquals(Campaign.Status.STATUS_STOPPING, stopping.getStatus());
    assertNotEquals(0, stopping.getStopRevision());
    assertEquals(Campaign.Status.STATUS_RUN, w.nextChange().getStatus());
    WatchStatusResponse change = w.nextChange();
    assertEquals(Campaign.Status.STATUS_STOPPING, change.getStatus());
    assertEquals(stopping.getStopRevision(), change.getStopRevision());
    assertEquals(stopping.getStopRevision(), change.getRevision());
    assertEquals(stopping, change.getCampaign());

    // A confirmation of another stop (a late one, say) completes nothing and names the current.
    CampaignClient.Details details = failsWith(Status.Code.FAILED_PRECONDITION, "STOP_REVISION_MISMATCH",
        () -> timed(stub).confirmDrained(ConfirmDrainedRequest.newBuilder()
            .setCustomerId(customer)
            .setId(c.getId())
            .setStopRevision(stopping.getStopRevision() - 1)
            .build()));
    assertEquals(Long.toString(stopping.getStopRevision()), details.metadata().get("stop_revision"));

    ConfirmDrainedRequest confirm = ConfirmDrainedRequest.newBuilder()
        .setCustomerId(customer)
        .setId(c.getId())
        .setStopRevision(change.getStopRevision())
        .build();
    Campaign confirmed = timed(stub).confirmDrained(confirm).getCampaign();
    assertEquals(Campaign.Status.STATUS_STOP, confirmed.getStatus());
    // Its reply lost, the dialer confirms again: nothing changes.
    assertEquals(confirmed, timed(stub).confirmDrained(confirm).getCampaign());

    WatchStatusResponse drained = w.nextChange();
    assertEquals(WatchStatusResponse.Reason.REASON_DRAINED, drained.getReason());
    assertEquals(Campaign.Status.STATUS_STOPPING, drained.getPreviousStatus());
    assertEquals(Campaign.Status.STATUS_STOP, drained.getStatus());
    assertEquals(confirmed, drained.getCampaign());
    w.nothingButHeartbeats(2_000); // the repeated confirmation wrote nothing
  }

  @Test
  public void watchResumesAcrossARestartWithoutMissingOrRepeatingAChange() throws Exception {
    ServerProcess server = startServer();
    Recorder recorder = new Recorder();
    CampaignServiceBlockingStub stub = connect(server).withInterceptors(recorder);
    String customer = newId();
    Campaign first = create(stub, runnable(customer));
    Watcher w = watch(stub, WatchStatusRequest.newBuilder().setCustomerId(customer).build(), true);
    assertEquals(first.getId(), w.next().getCampaignId());
    assertEquals(WatchStatusResponse.Kind.KIND_SNAPSHOT_END, w.next().getKind());
    setStatus(stub, first, Campaign.Status.STATUS_RUN);
    WatchStatusResponse ran = w.heldChange();

    // While the watch is busy with that change, the server restarts on the same database, and
    // changes are made that the watch can only learn from the log.
    server.terminate();
    server.start();
    CampaignServiceBlockingStub writer = connect(server);
    Campaign second = create(writer, runnable(customer));
    setStatus(writer, first, Campaign.Status.STATUS_STOP);
    w.release();

    WatchStatusResponse created = w.nextChange();
    WatchStatusResponse stopping = w.nextChange();
    assertEquals(second.getId(), created.getCampaignId());
    assertEquals(WatchStatusResponse.Reason.REASON_CREATED, created.getReason());
    assertEquals(first.getId(), stopping.getCampaignId());
    assertEquals(Campaign.Status.STATUS_STOPPING, stopping.getStatus());
    assertTrue(created.getRevision() > ran.getRevision());
    assertTrue(stopping.getRevision() > created.getRevision());
    assertEquals(ran.getRevision(), recorder.last().getAfterRevision());
    // Caught up, the stream says so at once with a heartbeat at the last revision.
    WatchStatusResponse caughtUp = w.next();
    assertEquals(WatchStatusResponse.Kind.KIND_HEARTBEAT, caughtUp.getKind());
    assertEquals(stopping.getRevision(), caughtUp.getRevision());

    Campaign live = setStatus(writer, second, Campaign.Status.STATUS_RUN);
    WatchStatusResponse change = w.nextChange();
    assertEquals(live.getId(), change.getCampaignId());
    assertTrue(change.getRevision() > stopping.getRevision());
  }

  @Test
  public void aSilentWatchIsAbandonedAndResumed() throws Exception {
    ServerProcess server = startServer();
    Recorder recorder = new Recorder();
    CampaignServiceBlockingStub stub = connect(server).withInterceptors(recorder);
    Campaign c = create(stub, runnable(newId()));
    Watcher w = watch(stub, WatchStatusRequest.newBuilder().setCustomerId(c.getCustomerId()).build(), false);
    w.next();
    assertEquals(WatchStatusResponse.Kind.KIND_SNAPSHOT_END, w.next().getKind());

    // A server that hangs (here: stopped by SIGSTOP) keeps its connections open and says
    // nothing; after three heartbeat intervals the watch gives up on the stream and calls again.
    server.signal("STOP");
    try {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
      while (recorder.calls.size() < 3) {
        assertTrue("the watch did not call again within 30 s", System.nanoTime() < deadline);
        Thread.sleep(20);
      }
    } finally {
      server.signal("CONT");
    }

    Campaign ran = setStatus(connect(server), c, Campaign.Status.STATUS_RUN);
    WatchStatusResponse change = w.nextChange();
    assertEquals(ran.getId(), change.getCampaignId());
    assertEquals(Campaign.Status.STATUS_RUN, change.getStatus());
    w.nothingButHeartbeats(2_000);
  }

  // -- the examples docs/clients/java.md quotes -------------------------------------------

  @Test
  public void exampleCallsWithADeadlineAndReadsTheErrorDetails() throws Exception {
    String address = shared.address, token = ServerProcess.TOKEN, customer = newId();
    List<String> printed = new ArrayList<>();

    ManagedChannel channel = CampaignClient.channelBuilder(address) // TLS, the retry policy
        .usePlaintext() // only on loopback
        .intercept(CampaignClient.bearerToken(token))
        .build();
    try {
      CampaignServiceBlockingStub stub = CampaignServiceGrpc.newBlockingStub(channel);
      // Every call gets a deadline of its own: withDeadlineAfter counts from now.
      Campaign created = stub.withDeadlineAfter(10, TimeUnit.SECONDS)
          .createCampaign(CreateCampaignRequest.newBuilder()
              .setCampaign(Campaign.newBuilder()
                  .setCustomerId(customer)
                  .setType(Campaign.Type.TYPE_CALL)
                  .setName("spring promo"))
              .setRequestId(UUID.randomUUID().toString()) // the same on a retry: created once
              .build())
          .getCampaign();
      try {
        stub.withDeadlineAfter(10, TimeUnit.SECONDS)
            .updateCampaignStatus(UpdateCampaignStatusRequest.newBuilder()
                .setCustomerId(customer)
                .setId(created.getId())
                .setStatus(Campaign.Status.STATUS_RUN)
                .build());
      } catch (StatusRuntimeException e) {
        CampaignClient.Details details = CampaignClient.Details.of(e);
        printed.add(details.code + " " + details.reason());
        for (PreconditionFailure.Violation violation : details.precondition.getViolationsList()) {
          printed.add(violation.getType() + " " + violation.getSubject());
        }
      }
    } finally {
      channel.shutdownNow();
    }

    assertEquals(
        List.of(
            "FAILED_PRECONDITION RUN_CONDITIONS_UNMET",
            "OUTPLAN_MISSING outplan_id",
            "OUTDIAL_MISSING outdial_id",
            "NOTHING_TO_RUN actions"),
        printed);
  }

  @Test
  public void exampleTheDialerConfirmsEachStop() throws Exception {
    CampaignServiceBlockingStub stub = connect(shared);
    String customer = newId();
    Campaign c = create(stub, runnable(customer));
    setStatus(stub, c, Campaign.Status.STATUS_RUN);
    setStatus(stub, c, Campaign.Status.STATUS_STOP);
    BlockingQueue<WatchStatusResponse> drained = new LinkedBlockingQueue<>();

    Thread dialer = new Thread(() -> {
      // A dialer without leases (the dialer kit, DialerTest, holds them): it follows the
      // campaigns and, once a stopping campaign's calls are drained, confirms that stop.
      WatchStatusRequest request = WatchStatusRequest.newBuilder().setCustomerId(customer).build();
      try {
        CampaignClient.watch(stub, request, item -> {
          if (item.getReason() == WatchStatusResponse.Reason.REASON_DRAINED) {
            drained.add(item);
          }
          if (item.getStatus() != Campaign.Status.STATUS_STOPPING) {
            return;
          }
          // ... the campaign's calls hang up, then:
          stub.withDeadlineAfter(10, TimeUnit.SECONDS)
              .confirmDrained(ConfirmDrainedRequest.newBuilder()
                  .setCustomerId(item.getCustomerId())
                  .setId(item.getCampaignId())
                  .setStopRevision(item.getStopRevision())
                  .build());
        });
      } catch (InterruptedException e) {
        return; // the dialer is shutting down
      }
    });
    dialer.start();
    try {
      WatchStatusResponse done = drained.poll(30, TimeUnit.SECONDS);
      assertNotNull("no drained stop within 30 s", done);
      assertEquals(c.getId(), done.getCampaignId());
      assertEquals(Campaign.Status.STATUS_STOPPING, done.getPreviousStatus());
      assertEquals(Campaign.Status.STATUS_STOP, done.getStatus());
    } finally {
      dialer.interrupt();
      dialer.join(10_000);
    }
    assertTrue("the dialer did not stop when interrupted", !dialer.isAlive());
  }

  // -- helpers ---------------------------------------------------------------------------

  /**
   * Runs CampaignClient.watch on a thread of its own and hands over its messages. A gated one
   * holds each message in the watch's handler until the test releases it.
   */
  private final class Watcher implements AutoCloseable {
    private final BlockingQueue<Object> items = new LinkedBlockingQueue<>();
    private final SynchronousQueue<Boolean> released = new SynchronousQueue<>();
    private final boolean gated;
    private final Thread thread;

    Watcher(CampaignServiceBlockingStub stub, WatchStatusRequest request, boolean gated) {
      this.gated = gated;
      thread = new Thread(() -> {
        try {
          CampaignClient.watch(stub, request, item -> {
            items.add(item);
            if (gated) {
              released.take();
            }
          });
        } catch (InterruptedException e) {
          items.add(e);
        } catch (RuntimeException e) {
          items.add(e);
        }
      });
      thread.start();
    }

    WatchStatusResponse held() throws InterruptedException {
      Object item = items.poll(30, TimeUnit.SECONDS);
      if (item == null) {
        fail("no message within 30 s");
      }
      if (item instanceof Exception) {
        throw new AssertionError("the watch ended", (Exception) item);
      }
      return (WatchStatusResponse) item;
    }

    void release() throws InterruptedException {
      if (gated) {
        released.put(true);
      }
    }

    WatchStatusResponse next() throws InterruptedException {
      WatchStatusResponse item = held();
      release();
      return item;
    }

    /** The next message that is not a heartbeat, held. */
    WatchStatusResponse heldChange() throws InterruptedException {
      while (true) {
        WatchStatusResponse item = held();
        if (item.getKind() != WatchStatusResponse.Kind.KIND_HEARTBEAT) {
          return item;
        }
        release();
      }
    }

    WatchStatusResponse nextChange() throws InterruptedException {
      WatchStatusResponse item = heldChange();
      release();
      return item;
    }

    void nothingButHeartbeats(long millis) throws InterruptedException {
      long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(millis);
      long left;
      while ((left = deadline - System.nanoTime()) > 0) {
        Object item = items.poll(left, TimeUnit.NANOSECONDS);
        if (item == null) {
          return;
        }
        if (!(item instanceof WatchStatusResponse)
            || ((WatchStatusResponse) item).getKind() != WatchStatusResponse.Kind.KIND_HEARTBEAT) {
          fail("expected only heartbeats, got " + item);
        }
        release();
      }
    }

    @Override
    public void close() throws InterruptedException {
      thread.interrupt();
      thread.join(10_000);
      assertTrue("the watch did not end when interrupted", !thread.isAlive());
    }
  }

  private Watcher watch(CampaignServiceBlockingStub stub, WatchStatusRequest request, boolean gated) {
    Watcher w = new Watcher(stub, request, gated);
    closing.add(w);
    return w;
  }

  /** Records the WatchStatus requests sent through it. */
  private static final class Recorder implements ClientInterceptor {
    final List<WatchStatusRequest> calls = new CopyOnWriteArrayList<>();

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      ClientCall<Q, R> call = next.newCall(method, options);
      if (!method.equals(CampaignServiceGrpc.getWatchStatusMethod())) {
        return call;
      }
      return new io.grpc.ForwardingClientCall.SimpleForwardingClientCall<Q, R>(call) {
        @Override
        public void sendMessage(Q message) {
          calls.add((WatchStatusRequest) message);
          super.sendMessage(message);
        }
      };
    }

    WatchStatusRequest last() {
      return calls.get(calls.size() - 1);
    }
  }
}
