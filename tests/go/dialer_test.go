package campaignclient_test

// The dialer kit (dialer.go) against real servers, as a dialer team checks it: each running
// campaign dialed by one dialer at a time, also while campaigns move to a dialer that joins
// and away from one that stops keeping alive; and the races of a dialer's life (a replayed
// stop, a RUN during a drain, an outage, a crash between drain and confirm).

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestDialersDialEachRunningCampaignOnceAndHandOverWithoutOverlap(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaigns := running(t, client, customer, 6)
	slowDrain := func(c *calls) {
		c.onDrain = func(string) { time.Sleep(100 * time.Millisecond) }
	}
	a := startKit(t, client, customer, "dialer-a", slowDrain)
	b := startKit(t, client, customer, "dialer-b", slowDrain)

	// Every running campaign dialed, each by one dialer, spread by their capacities.
	waitFor(t, 20*time.Second, func() bool {
		return dialedOnce(campaigns, a, b) && len(a.calls.dialingNow()) == 3
	})
	// A third dialer joins: campaigns move to it, each drained by its old holder before the
	// new one dials it.
	c := startKit(t, client, customer, "dialer-c", slowDrain)
	waitFor(t, 20*time.Second, func() bool {
		return dialedOnce(campaigns, a, b, c) && len(a.calls.dialingNow()) == 2 &&
			len(b.calls.dialingNow()) == 2
	})
	noOverlap(t, a, b, c)

	// The outdial list of one runs out: its holder reports it with its fencing token, and the
	// campaign (END_HANDLE_STOP) finishes: drained, confirmed, STOP. Another dialer cannot.
	finished := campaigns[0]
	holder, other := holderOf(finished.Id, a, b, c)
	if _, err := other.ReportOutdialExhausted(deadline(t), customer, finished.Id); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a report from a dialer without the lease: %v", err)
	}
	if _, err := holder.ReportOutdialExhausted(deadline(t), customer, finished.Id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		return get(t, client, finished).Status == campaignv1.Campaign_STATUS_STOP
	})
	if holder.calls.isDialing(finished.Id) {
		t.Fatal("the finished campaign is still dialed")
	}

	// Stopped gracefully, each dialer drains what it dials; nothing is dialed twice at once.
	for _, k := range []*kit{a, b, c} {
		k.close(t)
		if dialing := k.calls.dialingNow(); len(dialing) > 0 {
			t.Fatalf("%s closed while dialing %v", k.Holder(), dialing)
		}
	}
	noOverlap(t, a, b, c)
}

func TestADialerThatStopsKeepingAliveIsReplacedWithinTheTTLAndFenced(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaign := running(t, client, customer, 1)[0]
	cut := &faultyClient{CampaignServiceClient: client}
	a := startKit(t, cut, customer, "dialer-a")
	waitFor(t, 10*time.Second, func() bool { return a.calls.isDialing(campaign.Id) })
	staleToken := a.Leases()[campaign.Id]
	b := startKit(t, client, customer, "dialer-b")

	// a's keep-alives stop getting through (a pause, a cut): by ttl after the last one that
	// was answered it stops dialing by itself, and b gets the campaign.
	cut.pauseLeases()
	paused := time.Now()
	waitFor(t, leaseTTL+3*time.Second, func() bool { return b.calls.isDialing(campaign.Id) })
	took := b.calls.dialingSince(campaign.Id).Sub(paused)
	if took > leaseTTL+time.Second {
		t.Fatalf("b dialed %v after a's keep-alives stopped; the ttl is %v", took, leaseTTL)
	}
	t.Logf("b dialed %v after a's keep-alives stopped (ttl %v)", took, leaseTTL)
	if a.calls.isDialing(campaign.Id) {
		t.Fatal("a still dials a campaign whose lease it cannot have kept")
	}
	noOverlap(t, a, b)

	// What a sends with its old lease changes nothing.
	_, err := client.ConfirmDrained(deadline(t), &campaignv1.ConfirmDrainedRequest{
		CustomerId: customer, Id: campaign.Id, StopRevision: 1, FencingToken: staleToken,
	})
	details := failsWith(t, err, codes.FailedPrecondition, "LEASE_NOT_HELD")
	live := b.Leases()[campaign.Id]
	if live <= staleToken || details.Metadata()["fencing_token"] != fmt.Sprint(live) {
		t.Fatalf("LEASE_NOT_HELD names token %s; b holds %d, a held %d",
			details.Metadata()["fencing_token"], live, staleToken)
	}
	if got := get(t, client, campaign); got.Status != campaignv1.Campaign_STATUS_RUN {
		t.Fatalf("the refused confirmation changed the campaign: %v", got)
	}

	// Back, a finds its session expired, joins again, and goes on without the campaign.
	cut.resumeLeases()
	waitFor(t, 10*time.Second, func() bool { return cut.holdLeasesCalls() >= 2 })
	time.Sleep(leaseTTL)
	a.running(t)
	if a.calls.isDialing(campaign.Id) || !b.calls.isDialing(campaign.Id) {
		t.Fatal("the campaign moved back while b keeps its lease")
	}
	noOverlap(t, a, b)
}

func TestAReplayedStopThatARunCalledOffKeepsTheCampaignDialed(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaign := running(t, client, customer, 1)[0]
	cut := &faultyClient{CampaignServiceClient: client}
	a := startKit(t, cut, customer, "dialer-a")
	waitFor(t, 10*time.Second, func() bool { return a.calls.isDialing(campaign.Id) })

	// While a's watch is cut, the campaign is stopped and run again: the resumed stream
	// replays the STOPPING (its stop_revision one that a RUN called off), then the RUN.
	cut.cutWatch()
	stopping := setStatus(t, client, campaign, campaignv1.Campaign_STATUS_STOP)
	setStatus(t, client, campaign, campaignv1.Campaign_STATUS_RUN)
	dials := a.calls.dialCount(campaign.Id)
	cut.restoreWatch()

	// Caught up, a reconciles the campaign as it is now: running.
	waitFor(t, 15*time.Second, func() bool { return a.calls.dialCount(campaign.Id) > dials })
	if resumed := cut.lastWatch(); resumed.AfterRevision == 0 || resumed.AfterRevision >= stopping.StopRevision {
		t.Fatalf("the watch did not replay the stop %d: resumed after %d", stopping.StopRevision, resumed.AfterRevision)
	}
	if a.calls.drainCount(campaign.Id) != 0 || !a.calls.isDialing(campaign.Id) {
		t.Fatal("the replayed stop drained the campaign")
	}
	if confirms := cut.confirmAnswers(); len(confirms) != 0 {
		t.Fatalf("a confirmed a stop it saw only in history: %v", confirms)
	}
	a.running(t)
}

func TestARunDuringTheDrainIsDialedAgain(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaign := running(t, client, customer, 1)[0]
	recorder := &faultyClient{CampaignServiceClient: client}
	draining, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a := startKit(t, recorder, customer, "dialer-a", func(c *calls) {
		c.onDrain = func(string) {
			once.Do(func() {
				close(draining)
				<-proceed
			})
		}
	})
	waitFor(t, 10*time.Second, func() bool { return a.calls.isDialing(campaign.Id) })

	dials := a.calls.dialCount(campaign.Id)
	setStatus(t, client, campaign, campaignv1.Campaign_STATUS_STOP)
	<-draining
	// The campaign runs again before the drain ends: the confirmation of the stop comes too
	// late (CAMPAIGN_NOT_STOPPING), which means the state moved on, not an error.
	setStatus(t, client, campaign, campaignv1.Campaign_STATUS_RUN)
	close(proceed)

	waitFor(t, 10*time.Second, func() bool {
		return a.calls.dialCount(campaign.Id) > dials && a.calls.isDialing(campaign.Id)
	})
	if answers := recorder.confirmAnswers(); len(answers) != 1 || answers[0] != "CAMPAIGN_NOT_STOPPING" {
		t.Fatalf("expected one late confirmation refused CAMPAIGN_NOT_STOPPING, got %v", answers)
	}
	if got := get(t, client, campaign); got.Status != campaignv1.Campaign_STATUS_RUN {
		t.Fatalf("the campaign is %v", got.Status)
	}
	a.running(t)
}

func TestACampaignStoppedDuringAnOutageIsNotDialedOnReconnect(t *testing.T) {
	// Leases that outlive the outage by far: the test is of the watch catching up, and on a
	// busy machine the reconnect took longer than the shared server's 1.5 s ttl allows.
	client := connect(t, startServerTTL(t, 6*time.Second))
	customer := newID()
	campaigns := running(t, client, customer, 2)
	stopped, kept := campaigns[0], campaigns[1]
	cut := &faultyClient{CampaignServiceClient: client}
	a := startKit(t, cut, customer, "dialer-a")
	waitFor(t, 10*time.Second, func() bool { return dialedOnce(campaigns, a) })

	// An outage: both streams cut. One campaign is stopped meanwhile. The lease stream comes
	// back first, and grants both campaigns again; the watch is still down.
	cut.cutWatch()
	cut.cutLeases()
	setStatus(t, client, stopped, campaignv1.Campaign_STATUS_STOP)
	dials := a.calls.dialCount(stopped.Id)
	waitFor(t, 10*time.Second, func() bool { return cut.grantsReceived() >= 4 })
	time.Sleep(500 * time.Millisecond)
	if a.calls.dialCount(stopped.Id) != dials {
		t.Fatal("the campaign was dialed on a grant, before the watch had caught up")
	}

	// The watch catches up: the stopped campaign is drained and its stop confirmed with the
	// lease's token; the other is dialed on.
	cut.restoreWatch()
	waitFor(t, 15*time.Second, func() bool {
		return get(t, client, stopped).Status == campaignv1.Campaign_STATUS_STOP
	})
	if a.calls.dialCount(stopped.Id) != dials || a.calls.isDialing(stopped.Id) {
		t.Fatal("the stopped campaign was dialed after the outage")
	}
	// The reconnect, with the same holder within the ttl, kept the leases: the running
	// campaign was dialed all along.
	if !a.calls.isDialing(kept.Id) || a.calls.drainCount(kept.Id) != 0 {
		t.Fatal("the running campaign was drained")
	}
	a.running(t)
}

func TestACrashBetweenDrainAndConfirmIsHealedByTheNextProcess(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaign := running(t, client, customer, 1)[0]
	var a *kit
	a = startKit(t, client, customer, "", func(c *calls) {
		c.onDrain = func(string) { a.crash() } // drained, then gone before the confirmation
	})
	waitFor(t, 10*time.Second, func() bool { return a.calls.isDialing(campaign.Id) })
	stopped := time.Now()
	setStatus(t, client, campaign, campaignv1.Campaign_STATUS_STOP)
	a.waitEnded(t)
	if got := get(t, client, campaign); got.Status != campaignv1.Campaign_STATUS_STOPPING {
		t.Fatalf("the crashed dialer's stop completed: %v", got.Status)
	}

	// The next process (another holder) gets the stopping campaign once the crashed one's
	// lease expires: it has nothing to drain, and confirms the stop.
	b := startKit(t, client, customer, "")
	waitFor(t, 10*time.Second, func() bool {
		return get(t, client, campaign).Status == campaignv1.Campaign_STATUS_STOP
	})
	if took := time.Since(stopped); took > 3*leaseTTL+3*time.Second {
		t.Fatalf("the stop completed %v after it was asked; the stop grace is 60 s", took)
	}
	if b.calls.dialCount(campaign.Id) != 0 || b.calls.drainCount(campaign.Id) == 0 {
		t.Fatalf("b dialed the stopping campaign %d times, drained it %d times",
			b.calls.dialCount(campaign.Id), b.calls.drainCount(campaign.Id))
	}
}

func TestDialersKeepTheirLeasesThroughAServerRestart(t *testing.T) {
	// A restart takes a few seconds here: leases that live 10 s (the default) outlive it.
	s := startServerTTL(t, 10*time.Second)
	client := connect(t, s)
	customer := newID()
	campaigns := running(t, client, customer, 4)
	a := startKit(t, client, customer, "dialer-a")
	b := startKit(t, client, customer, "dialer-b")
	waitFor(t, 20*time.Second, func() bool { return dialedOnce(campaigns, a, b) })
	before := map[string]int64{}
	for _, k := range []*kit{a, b} {
		for id, token := range k.Leases() {
			before[id] = token
		}
	}

	// The server restarts (SIGTERM: UNAVAILABLE SHUTTING_DOWN on every stream). The dialers
	// join again with their holder identities: they keep their leases, and dial on.
	s.terminate(t)
	restarted := time.Now()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the server was down %v", time.Since(restarted))
	writer := connect(t, s)
	stopped := campaigns[0]
	setStatus(t, writer, stopped, campaignv1.Campaign_STATUS_STOP)
	waitFor(t, 20*time.Second, func() bool {
		return get(t, writer, stopped).Status == campaignv1.Campaign_STATUS_STOP
	})
	for _, c := range campaigns[1:] {
		holder, _ := holderOf(c.Id, a, b)
		if holder == nil || holder.calls.drainCount(c.Id) != 0 || holder.Leases()[c.Id] != before[c.Id] {
			t.Fatalf("campaign %s did not stay with its dialer through the restart", c.Id)
		}
	}
	if a.calls.isDialing(stopped.Id) || b.calls.isDialing(stopped.Id) {
		t.Fatal("the stopped campaign is still dialed")
	}
	a.running(t)
	b.running(t)
	noOverlap(t, a, b)
}

// -- helpers -----------------------------------------------------------------------------

// running makes count campaigns of customer and runs them.
func running(t *testing.T, client campaignv1.CampaignServiceClient, customer string, count int) []*campaignv1.Campaign {
	t.Helper()
	var made []*campaignv1.Campaign
	for i := 0; i < count; i++ {
		made = append(made, setStatus(t, client, create(t, client, runnable(customer)), campaignv1.Campaign_STATUS_RUN))
	}
	return made
}

func get(t *testing.T, client campaignv1.CampaignServiceClient, c *campaignv1.Campaign) *campaignv1.Campaign {
	t.Helper()
	got, err := client.GetCampaign(deadline(t), &campaignv1.GetCampaignRequest{CustomerId: c.CustomerId, Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	return got.Campaign
}

// kit is a Dialer running in the background, with what it asked of the application.
type kit struct {
	*campaignclient.Dialer
	calls  *calls
	cancel context.CancelFunc
	ended  chan error
}

func startKit(t *testing.T, client campaignv1.CampaignServiceClient, customer, holder string,
	setUp ...func(*calls)) *kit {
	t.Helper()
	c := &calls{since: map[string]time.Time{}, spans: map[string][]span{}, dials: map[string]int{}, drains: map[string]int{}}
	for _, f := range setUp {
		f(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &kit{calls: c, cancel: cancel, ended: make(chan error, 1)}
	k.Dialer = campaignclient.NewDialer(campaignclient.DialerConfig{
		Client: client, Holder: holder, CustomerID: customer, Capacity: 10,
		Dial: c.dial, Drain: c.drain, Logf: t.Logf,
	})
	c.who = k.Holder()
	go func() { k.ended <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		k.waitEnded(t)
	})
	return k
}

// crash ends the kit as a process dies: nothing drained, nothing released.
func (k *kit) crash() { k.cancel() }

func (k *kit) close(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := k.Close(ctx); err != nil {
		t.Fatalf("%s: Close: %v", k.Holder(), err)
	}
}

func (k *kit) waitEnded(t *testing.T) {
	select {
	case err := <-k.ended:
		k.ended <- err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: Run did not return", k.Holder())
	}
}

// running checks that nothing the servers answered ended the kit.
func (k *kit) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-k.ended:
		t.Fatalf("%s: Run returned %v", k.Holder(), err)
	default:
	}
}

// calls records a kit's Dial and Drain: the spans in which it dialed each campaign, from the
// first Dial to the end of the Drain that stopped it.
type calls struct {
	mu      sync.Mutex
	who     string
	since   map[string]time.Time
	spans   map[string][]span
	dials   map[string]int
	drains  map[string]int
	onDrain func(campaignID string)
}

type span struct {
	who      string
	from, to time.Time // to is zero while dialing
}

func (c *calls) dial(ctx context.Context, campaign *campaignv1.Campaign) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dials[campaign.Id]++
	if _, dialing := c.since[campaign.Id]; !dialing {
		c.since[campaign.Id] = time.Now()
	}
	return nil
}

func (c *calls) drain(ctx context.Context, campaignID string) error {
	c.mu.Lock()
	c.drains[campaignID]++
	hook := c.onDrain
	c.mu.Unlock()
	if hook != nil {
		hook(campaignID) // the calls in progress hang up
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if from, dialing := c.since[campaignID]; dialing {
		c.spans[campaignID] = append(c.spans[campaignID], span{c.who, from, time.Now()})
		delete(c.since, campaignID)
	}
	return nil
}

func (c *calls) dialingNow() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.since {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (c *calls) isDialing(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, dialing := c.since[id]
	return dialing
}

func (c *calls) dialingSince(id string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since[id]
}

func (c *calls) dialCount(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dials[id]
}

func (c *calls) drainCount(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drains[id]
}

// allSpans are the campaign's spans of every kit, the open ones ending now.
func allSpans(id string, kits ...*kit) []span {
	var all []span
	for _, k := range kits {
		k.calls.mu.Lock()
		all = append(all, k.calls.spans[id]...)
		if from, dialing := k.calls.since[id]; dialing {
			all = append(all, span{k.calls.who, from, time.Time{}})
		}
		k.calls.mu.Unlock()
	}
	sort.Slice(all, func(i, j int) bool { return all[i].from.Before(all[j].from) })
	return all
}

// noOverlap checks that no campaign was dialed by two kits at once.
func noOverlap(t *testing.T, kits ...*kit) {
	t.Helper()
	ids := map[string]bool{}
	for _, k := range kits {
		k.calls.mu.Lock()
		for id := range k.calls.dials {
			ids[id] = true
		}
		k.calls.mu.Unlock()
	}
	for id := range ids {
		spans := allSpans(id, kits...)
		for i := 1; i < len(spans); i++ {
			before := spans[i-1]
			if before.to.IsZero() || spans[i].from.Before(before.to) {
				t.Fatalf("campaign %s dialed by %s from %v while %s dialed it (%v to %v)", id,
					spans[i].who, spans[i].from.Format("15:04:05.000"), before.who,
					before.from.Format("15:04:05.000"), before.to.Format("15:04:05.000"))
			}
		}
	}
}

// dialedOnce says whether each campaign is dialed now by exactly one of the kits.
func dialedOnce(campaigns []*campaignv1.Campaign, kits ...*kit) bool {
	for _, c := range campaigns {
		dialers := 0
		for _, k := range kits {
			if k.calls.isDialing(c.Id) {
				dialers++
			}
		}
		if dialers != 1 {
			return false
		}
	}
	return true
}

// holderOf is the kit dialing the campaign, and another.
func holderOf(id string, kits ...*kit) (holder, other *kit) {
	for _, k := range kits {
		if k.calls.isDialing(id) {
			holder = k
		} else {
			other = k
		}
	}
	return holder, other
}

// faultyClient cuts and pauses a kit's streams, and records what it calls.
type faultyClient struct {
	campaignv1.CampaignServiceClient
	mu          sync.Mutex
	paused      chan struct{} // closed on resume; nil: not paused
	watchDown   bool
	watchCuts   []context.CancelFunc
	leaseCuts   []context.CancelFunc
	watches     []*campaignv1.WatchStatusRequest
	holdCalls   int
	grants      int      // KIND_GRANTED messages received
	confirmedAs []string // the ErrorInfo reason of each ConfirmDrained ("OK" for success)
}

func (f *faultyClient) WatchStatus(ctx context.Context, in *campaignv1.WatchStatusRequest,
	opts ...grpc.CallOption) (campaignv1.CampaignService_WatchStatusClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.watchDown {
		return nil, status.Error(codes.Unavailable, "cut")
	}
	f.watches = append(f.watches, &campaignv1.WatchStatusRequest{AfterRevision: in.AfterRevision, Timeline: in.Timeline})
	ctx, cancel := context.WithCancel(ctx)
	f.watchCuts = append(f.watchCuts, cancel)
	return f.CampaignServiceClient.WatchStatus(ctx, in, opts...)
}

func (f *faultyClient) cutWatch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchDown = true
	for _, cancel := range f.watchCuts {
		cancel()
	}
}

func (f *faultyClient) restoreWatch() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchDown = false
}

func (f *faultyClient) lastWatch() *campaignv1.WatchStatusRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches[len(f.watches)-1]
}

func (f *faultyClient) HoldLeases(ctx context.Context, opts ...grpc.CallOption) (
	campaignv1.CampaignService_HoldLeasesClient, error) {
	ctx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	f.holdCalls++
	f.leaseCuts = append(f.leaseCuts, cancel)
	f.mu.Unlock()
	stream, err := f.CampaignServiceClient.HoldLeases(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return &pausableStream{CampaignService_HoldLeasesClient: stream, f: f, ctx: ctx}, nil
}

// cutLeases ends the HoldLeases streams open now, as a broken connection does.
func (f *faultyClient) cutLeases() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, cancel := range f.leaseCuts {
		cancel()
	}
}

func (f *faultyClient) grantsReceived() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants
}

func (f *faultyClient) holdLeasesCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holdCalls
}

// pauseLeases holds every message of the HoldLeases streams, both ways, until resumeLeases.
func (f *faultyClient) pauseLeases() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paused = make(chan struct{})
}

func (f *faultyClient) resumeLeases() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.paused)
	f.paused = nil
}

func (f *faultyClient) ConfirmDrained(ctx context.Context, in *campaignv1.ConfirmDrainedRequest,
	opts ...grpc.CallOption) (*campaignv1.ConfirmDrainedResponse, error) {
	answer, err := f.CampaignServiceClient.ConfirmDrained(ctx, in, opts...)
	reason := "OK"
	if err != nil {
		reason = campaignclient.DetailsOf(err).Reason()
	}
	f.mu.Lock()
	f.confirmedAs = append(f.confirmedAs, reason)
	f.mu.Unlock()
	return answer, err
}

func (f *faultyClient) confirmAnswers() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.confirmedAs...)
}

type pausableStream struct {
	campaignv1.CampaignService_HoldLeasesClient
	f   *faultyClient
	ctx context.Context
}

func (s *pausableStream) wait() error {
	s.f.mu.Lock()
	paused := s.f.paused
	s.f.mu.Unlock()
	if paused == nil {
		return nil
	}
	select {
	case <-paused:
		return nil
	case <-s.ctx.Done():
		return status.Error(codes.Canceled, s.ctx.Err().Error())
	}
}

func (s *pausableStream) Send(m *campaignv1.HoldLeasesRequest) error {
	if err := s.wait(); err != nil {
		return err
	}
	return s.CampaignService_HoldLeasesClient.Send(m)
}

func (s *pausableStream) Recv() (*campaignv1.HoldLeasesResponse, error) {
	m, err := s.CampaignService_HoldLeasesClient.Recv()
	if err != nil {
		return m, err
	}
	if err := s.wait(); err != nil {
		return nil, err
	}
	if m.Kind == campaignv1.HoldLeasesResponse_KIND_GRANTED {
		s.f.mu.Lock()
		s.f.grants++
		s.f.mu.Unlock()
	}
	return m, nil
}
