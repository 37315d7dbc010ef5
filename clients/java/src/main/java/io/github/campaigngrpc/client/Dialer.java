package io.github.campaigngrpc.client;

import io.github.campaigngrpc.campaign.v1.Campaign;
import io.github.campaigngrpc.campaign.v1.CampaignServiceGrpc;
import io.github.campaigngrpc.campaign.v1.ConfirmDrainedRequest;
import io.github.campaigngrpc.campaign.v1.HoldLeasesRequest;
import io.github.campaigngrpc.campaign.v1.HoldLeasesResponse;
import io.github.campaigngrpc.campaign.v1.Lease;
import io.github.campaigngrpc.campaign.v1.ReportOutdialExhaustedRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusRequest;
import io.github.campaigngrpc.campaign.v1.WatchStatusResponse;
import io.grpc.Channel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.StreamObserver;
import java.net.InetAddress;
import java.security.SecureRandom;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * The dialer kit: it follows the campaigns (WatchStatus), holds this process's leases
 * (HoldLeases) and tells the application, through Calls, which campaigns to dial and which to
 * drain, and confirms each drained stop itself.
 *
 * <p>Level-triggered, as a controller of client-go or controller-runtime: the watch keeps each
 * campaign's latest state, the lease stream what this dialer holds; any change of either puts
 * the campaign on a work queue, and a pool of workers reconciles it with what both say now,
 * never two reconciles of one campaign at once. Nothing is acted on before the watch has
 * caught up, and a resumed watch's replay is applied only once it has: a state that was
 * already overtaken (a stop a later RUN called off) is never acted on.
 */
public final class Dialer implements AutoCloseable {
  /** What the application does. Both idempotent; never called twice at once for a campaign. */
  public interface Calls {
    /** Starts dialing the campaign, or keeps dialing it. */
    void dial(Target campaign) throws Exception;

    /** Stops starting calls on the campaign, and returns once the calls in progress ended. */
    void drain(String campaignId) throws Exception;
  }

  /** A campaign to dial. */
  public record Target(String customerId, String campaignId) {}

  /** A dialer's settings; start() joins and starts following. */
  public static final class Builder {
    private final Channel channel;
    private final Calls calls;
    private String holder = defaultHolder();
    private String customerId = "";
    private int capacity = 100;
    private int workers = 4;
    private Consumer<String> log = line -> {};

    private Builder(Channel channel, Calls calls) {
      this.channel = channel;
      this.calls = calls;
    }

    /** Unique per process, kept across reconnects; by default host name, pid and a random part. */
    public Builder holder(String holder) {
      this.holder = holder;
      return this;
    }

    /** Only this customer's campaigns; "" (the default) every customer's. */
    public Builder customerId(String customerId) {
      this.customerId = customerId;
      return this;
    }

    /** How many campaigns this dialer dials at once at most. */
    public Builder capacity(int capacity) {
      this.capacity = capacity;
      return this;
    }

    /** How many campaigns are reconciled side by side. */
    public Builder workers(int workers) {
      this.workers = workers;
      return this;
    }

    /** Where the dialer says what it does and what went wrong, a line at a time. */
    public Builder log(Consumer<String> log) {
      this.log = log;
      return this;
    }

    public Dialer start() {
      if (holder.isEmpty() || holder.length() > 128 || capacity < 1 || workers < 1) {
        throw new IllegalArgumentException(
            "a holder of 1 to 128 characters, a capacity and workers of 1 or more");
      }
      Dialer dialer = new Dialer(this);
      dialer.begin();
      return dialer;
    }
  }

  public static Builder builder(Channel channel, Calls calls) {
    return new Builder(channel, calls);
  }

  private static String defaultHolder() {
    String host;
    try {
      host = InetAddress.getLocalHost().getHostName();
    } catch (Exception e) {
      host = "dialer";
    }
    byte[] random = new byte[4];
    new SecureRandom().nextBytes(random);
    host = host.length() > 100 ? host.substring(0, 100) : host;
    return host + "-" + ProcessHandle.current().pid() + "-" + HexFormat.of().formatHex(random);
  }

  /** What the watch says of a campaign. */
  private record State(String customerId, Campaign.Status status, long stopRevision, boolean deleted) {
    static State of(WatchStatusResponse item) {
      return new State(item.getCustomerId(), item.getStatus(), item.getStopRevision(), item.getDeleted());
    }
  }

  /** A lease this dialer holds. */
  private record Held(String customerId, long token, boolean releaseRequested) {}

  private static final long CALL_SECONDS = 10;

  private final CampaignServiceGrpc.CampaignServiceBlockingStub stub;
  private final CampaignServiceGrpc.CampaignServiceStub leaseStub;
  private final Calls calls;
  private final String holder;
  private final String customerId;
  private final int capacity;
  private final Consumer<String> log;
  private final WorkQueue queue = new WorkQueue();
  private final ScheduledExecutorService timer;
  private final ExecutorService workers;
  private final int workerCount;
  private final Thread informer;

  // The watch's view, as of the last time it caught up.
  private final Map<String, State> campaigns = new ConcurrentHashMap<>();
  // What the informer's thread read since it last caught up.
  private final Map<String, State> replay = new HashMap<>();
  private boolean live; // the watch has caught up, and has not been cut since
  private boolean snapshot; // replay is a whole snapshot: what it lacks is gone
  private volatile long revision;
  private long informBackoffMillis = 100; // before a new snapshot; reset once caught up

  // The campaigns the application dials (dial called, drain not since).
  private final Set<String> dialing = ConcurrentHashMap.newKeySet();
  private final Map<String, Long> backoffs = new ConcurrentHashMap<>();

  // The lease stream; every field below is guarded by leaseLock.
  private final Object leaseLock = new Object();
  private final Map<String, Held> leases = new HashMap<>();
  private ClientCallStreamObserver<HoldLeasesRequest> requests;
  private long generation; // of the stream: the callbacks of an earlier one are ignored
  private boolean joined;
  private long joinSentAt;
  private final ArrayDeque<Long> keepAlivesSent = new ArrayDeque<>();
  private Set<String> regranted; // after a join, until the first keep-alive is answered
  private long ttlNanos = TimeUnit.SECONDS.toNanos(10);
  private long intervalNanos = ttlNanos / 3; // between keep-alives
  private long deadline; // System.nanoTime(): past it, every lease counts as lost
  private ScheduledFuture<?> keepAlives;
  private ScheduledFuture<?> expiry;
  private long rejoinMillis = 100;
  private boolean takenOver;
  private volatile boolean closing;
  private final CountDownLatch left = new CountDownLatch(1);

  private Dialer(Builder b) {
    stub = CampaignServiceGrpc.newBlockingStub(b.channel);
    leaseStub = CampaignServiceGrpc.newStub(b.channel);
    calls = b.calls;
    holder = b.holder;
    customerId = b.customerId;
    capacity = b.capacity;
    log = b.log;
    workerCount = b.workers;
    timer = Executors.newSingleThreadScheduledExecutor(daemons("dialer-timer"));
    workers = Executors.newFixedThreadPool(workerCount, daemons("dialer-worker"));
    informer = daemons("dialer-watch").newThread(this::inform);
    deadline = System.nanoTime();
  }

  private static ThreadFactory daemons(String name) {
    return runnable -> {
      Thread thread = new Thread(runnable, name);
      thread.setDaemon(true);
      return thread;
    };
  }

  private void begin() {
    informer.start();
    for (int i = 0; i < workerCount; i++) {
      workers.execute(this::work);
    }
    join();
  }

  public String holder() {
    return holder;
  }

  /** The fencing token of this dialer's lease on the campaign; 0 when it holds none. */
  public long fencingToken(String campaignId) {
    Held lease = held(campaignId);
    return lease == null ? 0 : lease.token();
  }

  /**
   * Reports that the campaign's outdial list has no targets left, with this dialer's fencing
   * token. FAILED_PRECONDITION when this dialer does not hold the campaign (LEASE_NOT_HELD
   * from the server when it lost it meanwhile: it drains it).
   */
  public Campaign reportOutdialExhausted(String customerId, String campaignId) {
    Held lease = held(campaignId);
    if (lease == null) {
      throw Status.FAILED_PRECONDITION
          .withDescription("this dialer holds no lease on campaign " + campaignId)
          .asRuntimeException();
    }
    try {
      return stub.withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
          .reportOutdialExhausted(ReportOutdialExhaustedRequest.newBuilder()
              .setCustomerId(customerId)
              .setId(campaignId)
              .setFencingToken(lease.token())
              .build())
          .getCampaign();
    } catch (StatusRuntimeException e) {
      if ("LEASE_NOT_HELD".equals(reason(e))) {
        forget(campaignId, lease.token());
      }
      throw e;
    }
  }

  // -- the informer ------------------------------------------------------------------------

  private void inform() {
    while (!closing) {
      WatchStatusRequest request = WatchStatusRequest.newBuilder().setCustomerId(customerId).build();
      live = false;
      snapshot = true;
      replay.clear();
      try {
        CampaignClient.watch(stub, request, new CampaignClient.Handler() {
          @Override
          public void handle(WatchStatusResponse item) {
            observe(item);
          }

          @Override
          public void resumed() {
            live = false; // what comes until the next heartbeat is a replay
          }
        });
      } catch (InterruptedException e) {
        return;
      } catch (RuntimeException e) {
        // OUT_OF_RANGE (the log no longer holds where the watch was, or another timeline):
        // start again from a snapshot.
        log.accept("watch ended, reading a snapshot again: " + e);
      }
      try {
        Thread.sleep(informBackoffMillis);
      } catch (InterruptedException e) {
        return;
      }
      informBackoffMillis = Math.min(informBackoffMillis * 2, 5000);
    }
  }

  private void observe(WatchStatusResponse item) {
    switch (item.getKind()) {
      case KIND_SNAPSHOT:
      case KIND_CHANGE:
        State state = State.of(item);
        if (live) {
          apply(item.getCampaignId(), state);
        } else {
          replay.put(item.getCampaignId(), state);
        }
        break;
      case KIND_SNAPSHOT_END:
      case KIND_HEARTBEAT:
        if (!live) {
          caughtUp(item.getRevision());
        }
        break;
      default:
        break;
    }
  }

  private void apply(String campaignId, State state) {
    if (!state.equals(campaigns.put(campaignId, state))) {
      queue.add(campaignId);
    }
  }

  /** The watch has sent every change up to revision: what it replayed becomes the view. */
  private void caughtUp(long revision) {
    if (snapshot) {
      for (String gone : campaigns.keySet()) {
        if (!replay.containsKey(gone)) {
          campaigns.remove(gone);
          queue.add(gone);
        }
      }
    }
    replay.forEach(this::apply);
    replay.clear();
    snapshot = false;
    live = true;
    informBackoffMillis = 100;
    this.revision = revision;
    log.accept("caught up at revision " + revision);
    queue.open();
  }

  /** The revision the dialer's view of the campaigns has caught up with. */
  public long revision() {
    return revision;
  }

  // -- the lease stream --------------------------------------------------------------------

  private void join() {
    synchronized (leaseLock) {
      if (closing || takenOver) {
        return;
      }
      long stream = ++generation;
      joined = false;
      keepAlivesSent.clear();
      requests = (ClientCallStreamObserver<HoldLeasesRequest>)
          leaseStub.holdLeases(new LeaseObserver(stream));
      joinSentAt = System.nanoTime();
      requests.onNext(HoldLeasesRequest.newBuilder()
          .setJoin(HoldLeasesRequest.Join.newBuilder()
              .setHolder(holder)
              .setCustomerId(customerId)
              .setCapacity(capacity))
          .build());
      // A join that is not answered within a ttl is given up, and made again.
      later(() -> {
        synchronized (leaseLock) {
          if (generation == stream && !joined) {
            cut("the join was not answered");
          }
        }
      }, ttlNanos);
    }
  }

  private final class LeaseObserver implements StreamObserver<HoldLeasesResponse> {
    private final long stream;

    LeaseObserver(long stream) {
      this.stream = stream;
    }

    @Override
    public void onNext(HoldLeasesResponse m) {
      synchronized (leaseLock) {
        if (generation == stream) {
          told(m);
        }
      }
    }

    @Override
    public void onError(Throwable t) {
      synchronized (leaseLock) {
        if (generation == stream) {
          ended(Status.fromThrowable(t), t);
        }
      }
    }

    @Override
    public void onCompleted() {
      synchronized (leaseLock) {
        if (generation == stream) {
          ended(Status.OK, null);
        }
      }
    }
  }

  private void told(HoldLeasesResponse m) {
    Lease lease = m.getLease();
    String id = lease.getCampaignId();
    Held held = leases.get(id);
    switch (m.getKind()) {
      case KIND_JOINED:
        joined = true;
        rejoinMillis = 100;
        log.accept("joined as " + holder);
        ttlNanos = nanos(m.getTtl());
        intervalNanos = nanos(m.getKeepAliveInterval());
        extend(joinSentAt);
        // The grants of what the session holds come before the answer to this keep-alive:
        // what is not granted again by then was lost while the stream was down.
        regranted = new HashSet<>();
        keepAlive();
        try {
          keepAlives = timer.scheduleAtFixedRate(
              this::keepAlive, intervalNanos, intervalNanos, TimeUnit.NANOSECONDS);
        } catch (RejectedExecutionException e) {
          // stopped
        }
        break;
      case KIND_GRANTED:
        leases.put(id, new Held(lease.getCustomerId(), lease.getFencingToken(), false));
        if (regranted != null) {
          regranted.add(id);
        }
        queue.add(id);
        break;
      case KIND_RELEASE_REQUESTED:
        if (held != null && held.token() == lease.getFencingToken()) {
          leases.put(id, new Held(held.customerId(), held.token(), true));
          queue.add(id);
        }
        break;
      case KIND_LOST:
        if (held != null && held.token() == lease.getFencingToken()) {
          leases.remove(id);
          queue.add(id);
        }
        break;
      case KIND_KEPT_ALIVE:
        Long sentAt = keepAlivesSent.poll();
        if (sentAt != null) {
          extend(sentAt);
        }
        if (regranted != null) {
          for (String lost : Set.copyOf(leases.keySet())) {
            if (!regranted.contains(lost)) {
              leases.remove(lost);
              queue.add(lost);
            }
          }
          regranted = null;
        }
        break;
      default:
        break;
    }
  }

  private void keepAlive() {
    synchronized (leaseLock) {
      if (joined) { // also while closing, until it leaves
        keepAlivesSent.add(System.nanoTime());
        requests.onNext(HoldLeasesRequest.newBuilder()
            .setKeepAlive(HoldLeasesRequest.KeepAlive.getDefaultInstance())
            .build());
      }
    }
  }

  /**
   * A keep-alive sent at sentAt was answered: the leases hold until a ttl after it, whatever
   * the stream says after. They count as lost one keep-alive interval sooner, so that their
   * drains end within the ttl.
   */
  private void extend(long sentAt) {
    long until = sentAt + ttlNanos - intervalNanos;
    if (until - deadline > 0) {
      deadline = until;
    }
    if (expiry != null) {
      expiry.cancel(false);
    }
    expiry = later(this::expire, deadline - System.nanoTime());
  }

  private void expire() {
    synchronized (leaseLock) {
      if (System.nanoTime() - deadline < 0) {
        return;
      }
      if (!leases.isEmpty()) {
        log.accept("no keep-alive answered for a ttl: every lease counts as lost");
      }
      dropLeases();
      if (joined && !closing) {
        cut("no keep-alive answered for a ttl");
      }
    }
  }

  private void dropLeases() {
    for (String id : leases.keySet()) {
      queue.add(id);
    }
    leases.clear();
  }

  /** Abandons the stream (leaseLock held) and joins again. */
  private void cut(String why) {
    generation++;
    joined = false;
    if (keepAlives != null) {
      keepAlives.cancel(false);
    }
    requests.cancel(why, null);
    rejoinLater();
  }

  private void rejoinLater() {
    later(this::join, TimeUnit.MILLISECONDS.toNanos(rejoinMillis));
    rejoinMillis = Math.min(rejoinMillis * 2, 2000);
  }

  private void ended(Status status, Throwable error) {
    generation++;
    joined = false;
    if (keepAlives != null) {
      keepAlives.cancel(false);
    }
    if (closing) {
      left.countDown();
      return;
    }
    String reason = error instanceof StatusRuntimeException ? reason((StatusRuntimeException) error) : "";
    log.accept("lease stream ended: " + status.getCode() + " " + reason);
    if ("LEASE_SESSION_EXPIRED".equals(reason)) {
      dropLeases(); // held elsewhere by now, maybe
    } else if ("LEASE_SESSION_TAKEN_OVER".equals(reason)) {
      // Another process joined with this holder identity: it holds the leases now.
      dropLeases();
      takenOver = true;
      return;
    }
    // A cut: the leases hold until the deadline, and a join with the same holder keeps them.
    rejoinLater();
  }

  private Held held(String campaignId) {
    synchronized (leaseLock) {
      if (System.nanoTime() - deadline >= 0) {
        return null;
      }
      return leases.get(campaignId);
    }
  }

  private void forget(String campaignId, long token) {
    synchronized (leaseLock) {
      Held held = leases.get(campaignId);
      if (held != null && held.token() == token) {
        leases.remove(campaignId);
      }
    }
    queue.add(campaignId);
  }

  private void release(String campaignId, long token) {
    synchronized (leaseLock) {
      Held held = leases.get(campaignId);
      if (held == null || held.token() != token) {
        return;
      }
      leases.remove(campaignId);
      if (joined) {
        requests.onNext(HoldLeasesRequest.newBuilder()
            .setRelease(HoldLeasesRequest.Release.newBuilder()
                .setCampaignId(campaignId)
                .setFencingToken(token))
            .build());
      }
    }
    log.accept("released " + campaignId);
  }

  private static long nanos(com.google.protobuf.Duration d) {
    return TimeUnit.SECONDS.toNanos(d.getSeconds()) + d.getNanos();
  }

  // -- the reconciles ----------------------------------------------------------------------

  private void work() {
    while (true) {
      String id;
      try {
        id = queue.take();
      } catch (InterruptedException e) {
        return;
      }
      try {
        reconcile(id);
        backoffs.remove(id);
      } catch (InterruptedException e) {
        return;
      } catch (StatusRuntimeException e) {
        failed(id, e);
      } catch (Exception e) {
        log.accept("reconcile " + id + " failed, again later: " + e);
        retry(id);
      } finally {
        queue.done(id);
      }
    }
  }

  /** Brings the application's calls on one campaign to what the watch and the lease say. */
  private void reconcile(String id) throws Exception {
    State state = campaigns.get(id);
    Held lease = held(id);
    boolean running = state != null && !state.deleted() && state.status() == Campaign.Status.STATUS_RUN;
    if (lease != null && !lease.releaseRequested() && running && !closing) {
      calls.dial(new Target(state.customerId(), id));
      dialing.add(id);
      return;
    }
    boolean stopping = lease != null && state != null && state.status() == Campaign.Status.STATUS_STOPPING;
    if (dialing.contains(id) || stopping || (lease != null && lease.releaseRequested())) {
      calls.drain(id);
      dialing.remove(id);
      log.accept("drained " + id);
    }
    if (stopping) {
      try {
        stub.withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS)
            .confirmDrained(ConfirmDrainedRequest.newBuilder()
                .setCustomerId(state.customerId())
                .setId(id)
                .setStopRevision(state.stopRevision())
                .setFencingToken(lease.token())
                .build());
      } catch (StatusRuntimeException e) {
        if (!"LEASE_NOT_HELD".equals(reason(e))) {
          throw e;
        }
        // Expired, or moved while this dialer was away: it is someone else's now.
        log.accept("lease lost (LEASE_NOT_HELD): " + id);
        forget(id, lease.token());
        return;
      }
      log.accept("confirmed the stop of " + id + " at " + state.stopRevision());
    }
    if (lease != null && lease.releaseRequested() && !closing) {
      release(id, lease.token());
    }
  }

  private void failed(String id, StatusRuntimeException e) {
    String reason = reason(e);
    switch (e.getStatus().getCode()) {
      case FAILED_PRECONDITION:
        if ("STOP_REVISION_MISMATCH".equals(reason) || "CAMPAIGN_NOT_STOPPING".equals(reason)) {
          // The campaign moved on since the state this reconcile saw: again, with the newest.
          log.accept("state moved on (" + reason + "): " + id);
          retry(id);
          return;
        }
        break;
      case UNAVAILABLE:
      case DEADLINE_EXCEEDED:
      case RESOURCE_EXHAUSTED:
      case ABORTED:
        log.accept("reconcile " + id + ": " + e.getStatus().getCode() + ", again later");
        retry(id);
        return;
      default:
        break;
    }
    log.accept("reconcile " + id + " failed, again later: " + e.getStatus() + " " + reason);
    retry(id);
  }

  /** Reconciles the campaign again after a backoff that doubles, from 100 ms to 10 s. */
  private void retry(String id) {
    long delay = backoffs.merge(id, 100L, (was, first) -> Math.min(was * 2, 10_000));
    later(() -> queue.add(id), TimeUnit.MILLISECONDS.toNanos(delay));
  }

  /** Runs task on the timer in nanos; null once the dialer stopped. */
  private ScheduledFuture<?> later(Runnable task, long nanos) {
    try {
      return timer.schedule(task, nanos, TimeUnit.NANOSECONDS);
    } catch (RejectedExecutionException e) {
      return null;
    }
  }

  private static String reason(StatusRuntimeException e) {
    return CampaignClient.Details.of(e).reason();
  }

  // -- the end -----------------------------------------------------------------------------

  /**
   * Drains every campaign this dialer holds (confirming the stops among them), releases the
   * leases and leaves: the server gives the campaigns to other dialers at once.
   */
  @Override
  public void close() throws InterruptedException {
    if (closing) {
      return;
    }
    closing = true;
    Set<String> all = new LinkedHashSet<>(dialing);
    synchronized (leaseLock) {
      all.addAll(leases.keySet());
    }
    all.forEach(queue::add);
    queue.open(); // also when the watch never caught up: what is dialed is drained
    long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while ((!queue.idle() || !dialing.isEmpty()) && System.nanoTime() - until < 0) {
      Thread.sleep(10);
    }
    synchronized (leaseLock) {
      if (joined) {
        for (Map.Entry<String, Held> lease : leases.entrySet()) {
          requests.onNext(HoldLeasesRequest.newBuilder()
              .setRelease(HoldLeasesRequest.Release.newBuilder()
                  .setCampaignId(lease.getKey())
                  .setFencingToken(lease.getValue().token()))
              .build());
        }
        leases.clear();
        if (keepAlives != null) {
          keepAlives.cancel(false);
        }
        requests.onCompleted();
        joined = false;
      } else {
        generation++;
        if (requests != null) {
          requests.cancel("the dialer is closing", null);
        }
        left.countDown();
      }
    }
    left.await(10, TimeUnit.SECONDS);
    stop();
  }

  /** Stops at once, draining and releasing nothing, as a process that dies. */
  public void abort() throws InterruptedException {
    if (closing) {
      return;
    }
    closing = true;
    synchronized (leaseLock) {
      generation++;
      if (requests != null) {
        requests.cancel("the dialer died", null);
      }
    }
    stop();
  }

  private void stop() throws InterruptedException {
    informer.interrupt();
    workers.shutdownNow();
    timer.shutdownNow();
    informer.join(10_000);
    workers.awaitTermination(10, TimeUnit.SECONDS);
  }

  /**
   * The campaigns to reconcile: a campaign is in it at most once, and is not handed out again
   * while a worker has it (it comes back after, if it was added meanwhile).
   */
  private static final class WorkQueue {
    private final LinkedHashSet<String> ready = new LinkedHashSet<>();
    private final Set<String> dirty = new HashSet<>();
    private final Set<String> busy = new HashSet<>();
    private boolean open; // once the watch has caught up

    synchronized void add(String id) {
      if (!dirty.add(id)) {
        return;
      }
      if (!busy.contains(id)) {
        ready.add(id);
        notifyAll();
      }
    }

    synchronized void open() {
      open = true;
      notifyAll();
    }

    synchronized String take() throws InterruptedException {
      while (!open || ready.isEmpty()) {
        wait();
      }
      String id = ready.iterator().next();
      ready.remove(id);
      dirty.remove(id);
      busy.add(id);
      return id;
    }

    synchronized void done(String id) {
      busy.remove(id);
      if (dirty.contains(id)) {
        ready.add(id);
        notifyAll();
      }
    }

    synchronized boolean idle() {
      return ready.isEmpty() && busy.isEmpty();
    }
  }
}
