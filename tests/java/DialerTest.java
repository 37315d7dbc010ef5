// The dialer kit (io.github.campaigngrpc.client.Dialer) against a real server with short
// leases: dialers share the running campaigns without ever dialing one twice at once, replace a
// dialer that went silent, and come through the races of a dialer's life.
// tests/e2e/test_java_client.py runs it with CampaignClientTest.

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import io.github.campaigngrpc.campaign.v1.Campaign;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc.CampaignServiceBlockingStub;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.ConfirmDrainedRequest;
import io.github.campaigngrpc.campaign.v1.ListCampaignEventsRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusResponse;
import io.github.campaigngrpc.client.CampaignClient;
import io.github.campaigngrpc.client.Dialer;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ForwardingClientCall;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import org.junit.After;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

public class DialerTest {
  /** The server's lease time to live, in seconds: short, so that expiries come quickly. */
  private static final double TTL = 1.5;
  /** Its stop grace: a stop completed well before it was confirmed by a dialer. */
  private static final int STOP_GRACE = 30;

  /** One server for every test; each works for a customer of its own. */
  private static ServerProcess server;

  private final List<AutoCloseable> closing = new ArrayList<>();

  @BeforeClass
  public static void startServer() throws Exception {
    server = new ServerProcess(Files.createTempDirectory("campaign-java-dialer-"),
        "--lease-ttl", Double.toString(TTL), "--stop-grace", Integer.toString(STOP_GRACE));
  }

  @AfterClass
  public static void stopServer() throws Exception {
    server.close();
  }

  @After
  public void closeEverything() throws Exception {
    for (int i = closing.size() - 1; i >= 0; i--) {
      closing.get(i).close();
    }
  }

  private Channel channel(ClientInterceptor... interceptors) {
    ManagedChannel channel = ServerProcess.channel(server.address, ServerProcess.TOKEN);
    closing.add(channel::shutdownNow);
    return ClientInterceptors.intercept(channel, interceptors);
  }

  private CampaignServiceBlockingStub stub() {
    return CampaignServiceGrpc.newBlockingStub(channel());
  }

  private final class Started {
    final Dialer dialer;
    final List<String> log = new CopyOnWriteArrayList<>();

    Started(String customer, App app, Channel channel) {
      dialer = Dialer.builder(channel, app)
          .customerId(customer)
          .capacity(10)
          .log(line -> {
            log.add(line);
            System.out.println(app.name + ": " + line);
          })
          .start();
      closing.add(dialer);
    }

    boolean said(String start) {
      return log.stream().anyMatch(line -> line.startsWith(start));
    }
  }

  private Started dialer(String customer, App app, ClientInterceptor... interceptors) {
    return new Started(customer, app, channel(interceptors));
  }

  private static List<Campaign> running(CampaignServiceBlockingStub stub, String customer, int count) {
    List<Campaign> made = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      Campaign c = CampaignClientTest.create(stub, CampaignClientTest.runnable(customer));
      made.add(CampaignClientTest.setStatus(stub, c, Campaign.Status.STATUS_RUN));
    }
    return made;
  }

  private static void eventually(double seconds, BooleanSupplier condition, Supplier<Object> what)
      throws InterruptedException {
    long deadline = System.nanoTime() + (long) (seconds * 1e9);
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() - deadline > 0) {
        throw new AssertionError("not within " + seconds + " s: " + what.get());
      }
      Thread.sleep(20);
    }
  }

  /** Who dials each campaign, as the applications say: two dialers at once is an overlap. */
  static final class Ledger {
    private final Map<String, String> dialer = new HashMap<>();
    final List<String> overlaps = new ArrayList<>();
    final List<String> drained = new ArrayList<>();

    synchronized void dial(String who, String campaignId) {
      String other = dialer.putIfAbsent(campaignId, who);
      if (other != null && !other.equals(who)) {
        overlaps.add(campaignId + " dialed by " + who + " while " + other + " dials it");
      }
    }

    synchronized boolean dials(String who, String campaignId) {
      return who.equals(dialer.get(campaignId));
    }

    synchronized void drained(String who, String campaignId) {
      if (dialer.remove(campaignId, who)) {
        drained.add(who + " " + campaignId);
      }
    }

    synchronized String who(String campaignId) {
      return dialer.get(campaignId);
    }

    /** How many campaigns each dialer dials. */
    synchronized Map<String, Integer> counts() {
      Map<String, Integer> counts = new TreeMap<>();
      dialer.values().forEach(who -> counts.merge(who, 1, Integer::sum));
      return counts;
    }

    synchronized Set<String> campaigns() {
      return new TreeSet<>(dialer.keySet());
    }

    @Override
    public synchronized String toString() {
      return dialer + ", overlaps " + overlaps;
    }
  }

  /** The application of one dialer: its calls take drainMillis to hang up, or until hold opens. */
  static final class App implements Dialer.Calls {
    final String name;
    final Ledger ledger;
    final BlockingQueue<String> draining = new LinkedBlockingQueue<>();
    volatile CountDownLatch hold;
    volatile long drainMillis = 100;

    App(String name, Ledger ledger) {
      this.name = name;
      this.ledger = ledger;
    }

    @Override
    public void dial(Dialer.Target campaign) {
      ledger.dial(name, campaign.campaignId());
    }

    @Override
    public void drain(String campaignId) throws InterruptedException {
      if (ledger.dials(name, campaignId)) {
        draining.add(campaignId);
        Thread.sleep(drainMillis);
        CountDownLatch h = hold;
        if (h != null) {
          h.await();
        }
      }
      ledger.drained(name, campaignId);
    }
  }

  private static Set<String> ids(List<Campaign> campaigns) {
    Set<String> ids = new TreeSet<>();
    campaigns.forEach(c -> ids.add(c.getId()));
    return ids;
  }

  @Test
  public void everyRunningCampaignIsDialedByOneDialerAndMovesWithoutOverlap() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    List<Campaign> campaigns = running(stub, customer, 6);
    Ledger ledger = new Ledger();
    dialer(customer, new App("a", ledger));
    dialer(customer, new App("b", ledger));
    eventually(15, () -> ledger.counts().equals(Map.of("a", 3, "b", 3)), ledger::toString);
    assertEquals(ids(campaigns), ledger.campaigns());

    // A third joins: campaigns move to it, each drained where it was before it is dialed there.
    App third = new App("c", ledger);
    Started c = dialer(customer, third);
    eventually(15, () -> ledger.counts().equals(Map.of("a", 2, "b", 2, "c", 2)), ledger::toString);
    assertEquals(ids(campaigns), ledger.campaigns());

    // It leaves, its calls taking longer to hang up than a ttl: it keeps its leases meanwhile,
    // and what it dialed goes back to the others only once drained.
    third.drainMillis = (long) (TTL * 1000) + 500;
    c.dialer.close();
    eventually(15, () -> ledger.counts().equals(Map.of("a", 3, "b", 3)), ledger::toString);
    assertEquals(ids(campaigns), ledger.campaigns());
    assertEquals(List.of(), ledger.overlaps);
  }

  /** Drops every message of the HoldLeases streams through it while muffled: a partition. */
  static final class Muffle implements ClientInterceptor {
    volatile boolean on;

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      ClientCall<Q, R> call = next.newCall(method, options);
      if (!method.equals(CampaignServiceGrpc.getHoldLeasesMethod())) {
        return call;
      }
      return new ForwardingClientCall.SimpleForwardingClientCall<Q, R>(call) {
        @Override
        public void sendMessage(Q message) {
          if (!on) {
            super.sendMessage(message);
          }
        }
      };
    }
  }

  @Test
  public void aDialerWhoseKeepAlivesStopIsReplacedWithinTheTtlAndFenced() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    String id = campaign.getId();
    Ledger ledger = new Ledger();
    Muffle muffle = new Muffle();
    Started a = dialer(customer, new App("a", ledger), muffle);
    eventually(10, () -> "a".equals(ledger.who(id)), ledger::toString);
    long stale = a.dialer.fencingToken(id);
    assertTrue(stale > 0);
    Started b = dialer(customer, new App("b", ledger));
    eventually(10, () -> b.said("joined"), () -> b.log);

    long muffled = System.nanoTime();
    muffle.on = true;
    eventually(TTL + 5, () -> "b".equals(ledger.who(id)), ledger::toString);
    double took = (System.nanoTime() - muffled) / 1e9;
    assertTrue("replaced after " + took + " s", took < TTL + 1);
    assertEquals(List.of(), ledger.overlaps); // a stopped by itself, by its deadline
    assertTrue(b.dialer.fencingToken(id) > stale);

    // The dialer that lost the lease confirms a stop with its token: refused, nothing changes.
    CampaignClient.Details refused = CampaignClientTest.failsWith(
        Status.Code.FAILED_PRECONDITION, "LEASE_NOT_HELD",
        () -> stub.withDeadlineAfter(10, TimeUnit.SECONDS)
            .confirmDrained(ConfirmDrainedRequest.newBuilder()
                .setCustomerId(customer)
                .setId(id)
                .setStopRevision(1)
                .setFencingToken(stale)
                .build()));
    assertEquals(Long.toString(b.dialer.fencingToken(id)), refused.metadata().get("fencing_token"));
    Campaign after = CampaignClientTest.get(stub, campaign);
    assertEquals(Campaign.Status.STATUS_RUN, after.getStatus());
    assertEquals(campaign.getEtag(), after.getEtag());
    muffle.on = false;
  }

  /** Cuts the WatchStatus calls through it and holds new ones back until it opens again. */
  static final class Gate implements ClientInterceptor {
    private boolean shut;
    private ClientCall<?, ?> current;

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      if (!method.equals(CampaignServiceGrpc.getWatchStatusMethod())) {
        return next.newCall(method, options);
      }
      synchronized (this) {
        while (shut) {
          try {
            wait();
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            break;
          }
        }
        ClientCall<Q, R> call = next.newCall(method, options);
        current = call;
        return call;
      }
    }

    synchronized void cut() {
      shut = true;
      if (current != null) {
        current.cancel("cut by the test", null);
      }
    }

    synchronized void open() {
      shut = false;
      notifyAll();
    }
  }

  @Test
  public void aReplayedStopThatARunCalledOffIsNotActedOn() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    Ledger ledger = new Ledger();
    Gate gate = new Gate();
    Started a = dialer(customer, new App("a", ledger), gate);
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);

    // The watch is cut; meanwhile the campaign is stopped and run again. The resumed watch
    // replays the stop, then the RUN that called it off: only the latter counts.
    gate.cut();
    long before = a.dialer.revision();
    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_STOP);
    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_RUN);
    gate.open();
    eventually(10, () -> a.dialer.revision() > before, () -> a.log);
    assertEquals(List.of(), ledger.drained);
    assertEquals("a", ledger.who(campaign.getId()));

    // The kit lives on: the next stop is drained and confirmed.
    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_STOP);
    eventually(10, () -> CampaignClientTest.get(stub, campaign).getStatus() == Campaign.Status.STATUS_STOP,
        () -> a.log);
    assertEquals(List.of("a " + campaign.getId()), ledger.drained);
  }

  @Test
  public void aRunDuringADrainIsDialedAgain() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    Ledger ledger = new Ledger();
    App app = new App("a", ledger);
    app.hold = new CountDownLatch(1);
    Started a = dialer(customer, app);
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);

    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_STOP);
    assertEquals(campaign.getId(), app.draining.poll(10, TimeUnit.SECONDS));
    // While the calls hang up, the campaign is run again: the confirmation of that stop is
    // refused (CAMPAIGN_NOT_STOPPING), and the kit dials the campaign again.
    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_RUN);
    app.hold.countDown();
    eventually(10, () -> a.said("state moved on (CAMPAIGN_NOT_STOPPING)"), () -> a.log);
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);
    assertEquals(Campaign.Status.STATUS_RUN, CampaignClientTest.get(stub, campaign).getStatus());
  }

  @Test
  public void aCrashBetweenDrainAndConfirmIsHealedByTheNextProcess() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    Ledger ledger = new Ledger();
    App first = new App("a", ledger);
    first.hold = new CountDownLatch(1); // its calls never hang up: it dies draining
    Started a = dialer(customer, first);
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);

    long stopped = System.nanoTime();
    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_STOP);
    assertEquals(campaign.getId(), first.draining.poll(10, TimeUnit.SECONDS));
    a.dialer.abort();

    // The next process, with a holder of its own, gets the lease once a's expired, finds the
    // campaign stopping in its snapshot, drains it (nothing to drain) and confirms.
    Started b = dialer(customer, new App("b", ledger));
    eventually(10, () -> CampaignClientTest.get(stub, campaign).getStatus() == Campaign.Status.STATUS_STOP,
        () -> b.log);
    double took = (System.nanoTime() - stopped) / 1e9;
    assertTrue("stopped after " + took + " s", took < STOP_GRACE / 3.0);
    eventually(10, () -> b.said("confirmed the stop of " + campaign.getId()), () -> b.log);
    WatchStatusResponse last = null;
    for (WatchStatusResponse e : stub.withDeadlineAfter(10, TimeUnit.SECONDS)
        .listCampaignEvents(ListCampaignEventsRequest.newBuilder()
            .setCustomerId(customer)
            .setCampaignId(campaign.getId())
            .build())
        .getEventsList()) {
      if (e.getStatus() == Campaign.Status.STATUS_STOP && e.getPreviousStatus() == Campaign.Status.STATUS_STOPPING) {
        last = e;
        break;
      }
    }
    assertNotNull("no completed stop among the events", last);
    assertEquals(WatchStatusResponse.Reason.REASON_DRAINED, last.getReason());
  }

  @Test
  public void theEndOfTheOutdialIsReportedWithTheTokenAndTheFinishedCampaignConfirmed() throws Exception {
    CampaignServiceBlockingStub stub = stub();
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    Ledger ledger = new Ledger();
    Started a = dialer(customer, new App("a", ledger));
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);

    Campaign finishing = a.dialer.reportOutdialExhausted(customer, campaign.getId());
    assertEquals(Campaign.Status.STATUS_STOPPING, finishing.getStatus());
    eventually(10, () -> CampaignClientTest.get(stub, campaign).getStatus() == Campaign.Status.STATUS_STOP,
        () -> a.log);
    assertEquals(List.of("a " + campaign.getId()), ledger.drained);

    // The stop ended the lease: the dialer reports nothing for a campaign it does not hold.
    eventually(10, () -> a.dialer.fencingToken(campaign.getId()) == 0, () -> a.log);
    try {
      a.dialer.reportOutdialExhausted(customer, campaign.getId());
      throw new AssertionError("a report without a lease was sent");
    } catch (StatusRuntimeException e) {
      assertEquals(Status.Code.FAILED_PRECONDITION, e.getStatus().getCode());
    }
  }

  @Test
  public void aDialerKeepsItsLeasesAcrossARestartOfTheServer() throws Exception {
    // A ttl that outlasts the restart: the dialer joins again, with its holder, within it.
    ServerProcess own = new ServerProcess(Files.createTempDirectory("campaign-java-dialer-"),
        "--lease-ttl", "20", "--stop-grace", Integer.toString(STOP_GRACE));
    closing.add(own);
    ManagedChannel channel = ServerProcess.channel(own.address, ServerProcess.TOKEN);
    closing.add(channel::shutdownNow);
    CampaignServiceBlockingStub stub = CampaignServiceGrpc.newBlockingStub(channel);
    String customer = CampaignClientTest.newId();
    Campaign campaign = running(stub, customer, 1).get(0);
    Ledger ledger = new Ledger();
    Started a = new Started(customer, new App("a", ledger), channel);
    eventually(10, () -> "a".equals(ledger.who(campaign.getId())), ledger::toString);
    long token = a.dialer.fencingToken(campaign.getId());

    own.terminate();
    own.start();
    eventually(20, () -> a.log.stream().filter(line -> line.startsWith("joined")).count() == 2, () -> a.log);
    Thread.sleep(1000); // the grants again, and keep-alives
    assertEquals(token, a.dialer.fencingToken(campaign.getId()));
    assertEquals(List.of(), ledger.drained);

    CampaignClientTest.setStatus(stub, campaign, Campaign.Status.STATUS_STOP);
    eventually(10, () -> CampaignClientTest.get(stub, campaign).getStatus() == Campaign.Status.STATUS_STOP,
        () -> a.log);
  }

  // -- the example docs/dialer.md quotes --------------------------------------------------

  @Test
  public void exampleTheDialerKit() throws Exception {
    String address = server.address, token = ServerProcess.TOKEN, customer = CampaignClientTest.newId();
    CampaignServiceBlockingStub admin = stub();
    Campaign campaign = running(admin, customer, 1).get(0);
    Set<String> dialing = ConcurrentHashMap.newKeySet();

    ManagedChannel channel = CampaignClient.channelBuilder(address) // TLS, the retry policy
        .usePlaintext() // only on loopback
        .intercept(CampaignClient.bearerToken(token))
        .build();
    Dialer dialer = Dialer.builder(channel, new Dialer.Calls() {
          @Override
          public void dial(Dialer.Target campaign) {
            dialing.add(campaign.campaignId()); // start placing its calls, or go on
          }

          @Override
          public void drain(String campaignId) {
            dialing.remove(campaignId); // stop placing calls; return once the last hung up
          }
        })
        .customerId(customer) // "" for every customer's campaigns
        .capacity(50) // how many campaigns it dials at once at most
        .start();
    try {
      eventually(10, () -> dialing.contains(campaign.getId()), () -> dialing);
      CampaignClientTest.setStatus(admin, campaign, Campaign.Status.STATUS_STOP);
      eventually(10, () -> CampaignClientTest.get(admin, campaign).getStatus() == Campaign.Status.STATUS_STOP,
          () -> dialing);
      assertEquals(Set.of(), dialing);
    } finally {
      dialer.close(); // drains what it dials, lets go of its leases, leaves
      channel.shutdownNow();
    }
  }
}
