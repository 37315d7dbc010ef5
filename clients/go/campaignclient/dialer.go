package campaignclient

// The dialer kit: what a dialer process runs to dial the campaigns it is given, and only
// those, with several dialers side by side. It is the informer and controller of client-go:
// a watch (WatchStatus) keeps each campaign's latest state, a HoldLeases stream keeps the
// leases the server gives this process, and any change of either puts the campaign on a
// work queue; workers reconcile each campaign with what it should be (dialed or not,
// confirmed, released), never two for one campaign at once. It acts on the state as it is
// now, never on history the watch replays.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DialerConfig is what a Dialer needs; Client, Capacity, Dial and Drain are required.
type DialerConfig struct {
	Client campaignv1.CampaignServiceClient
	// Unique per process, kept across its reconnects; default: host name, pid and a random
	// suffix.
	Holder string
	// Only this customer's campaigns; "" for every customer's.
	CustomerID string
	// How many campaigns this process dials at once at most.
	Capacity int32
	// Start dialing the campaign, or keep dialing it (called again on every change of it).
	Dial func(ctx context.Context, campaign *campaignv1.Campaign) error
	// Stop starting calls of the campaign, and return once its calls in progress ended.
	// Also called for a campaign not being dialed: then it has nothing to wait for.
	Drain func(ctx context.Context, campaignID string) error
	// How many campaigns are reconciled at once (default Capacity+1: every campaign held can
	// drain at once, and a lost lease is not kept waiting behind them).
	Workers int
	// Where the kit says what went wrong (default log.Printf).
	Logf func(format string, args ...interface{})
}

// Dialer dials the campaigns whose leases it holds while they run: see DialerConfig.
type Dialer struct {
	cfg   DialerConfig
	queue *workQueue

	mu        sync.Mutex
	campaigns map[string]*campaignState // the watch's view
	snapshot  map[string]bool           // the campaigns a snapshot being read has named
	synced    bool                      // the watch has caught up: its view is current
	leases    map[string]*heldLease     // what the server says this process holds
	dialing   map[string]bool           // Dial was called and Drain not since
	failures  map[string]int
	ttl       time.Duration
	deadline  time.Time   // past it every lease counts as lost
	expiry    *time.Timer // fires at deadline
	current   *leaseStream
	closing   bool

	cancelWatch context.CancelFunc // ends the watch's stream, to resume it

	sendMu     sync.Mutex // one Send at a time on the stream
	stream     campaignv1.CampaignService_HoldLeasesClient
	halfClosed bool

	stop     chan struct{} // Close is done waiting: Run returns
	stopOnce sync.Once
	left     chan struct{} // the stream ended after the half-close
	leftOnce sync.Once
	done     chan struct{} // Run returned
}

type campaignState struct {
	revision     int64
	customerID   string
	status       campaignv1.Campaign_Status
	stopRevision int64
	deleted      bool
	campaign     *campaignv1.Campaign
}

type heldLease struct {
	customerID       string
	token            int64
	releaseRequested bool
	released         bool // the release went out on the current stream
	granted          bool // granted on the current stream (again, after a reconnect)
}

// leaseStream is one HoldLeases call: the send times of its keep-alives not answered yet.
type leaseStream struct {
	cancel     context.CancelFunc
	pending    []time.Time
	regranting bool // joined again: leases not granted again by the first answer are gone
}

// NewDialer makes a Dialer; Run runs it.
func NewDialer(cfg DialerConfig) *Dialer {
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		cfg.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(4))
	}
	if cfg.Workers <= 0 {
		cfg.Workers = int(cfg.Capacity) + 1
	}
	if cfg.Logf == nil {
		cfg.Logf = log.Printf
	}
	d := &Dialer{
		cfg:       cfg,
		queue:     newWorkQueue(),
		campaigns: map[string]*campaignState{},
		leases:    map[string]*heldLease{},
		dialing:   map[string]bool{},
		failures:  map[string]int{},
		stop:      make(chan struct{}),
		left:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	d.expiry = time.AfterFunc(time.Hour, d.expire)
	d.expiry.Stop()
	return d
}

// Holder is the identity this process joins with.
func (d *Dialer) Holder() string { return d.cfg.Holder }

// Leases are the campaigns this process holds now, with their fencing tokens.
func (d *Dialer) Leases() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	held := map[string]int64{}
	if time.Now().Before(d.deadline) {
		for id, l := range d.leases {
			held[id] = l.token
		}
	}
	return held
}

// Run runs the dialer until Close, or until ctx ends: then nothing is drained or released,
// as when the process dies, and its leases go to other dialers after their time to live.
func (d *Dialer) Run(ctx context.Context) error {
	defer close(d.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2 + d.cfg.Workers)
	go func() { defer wg.Done(); d.inform(ctx) }()
	go func() { defer wg.Done(); d.hold(ctx) }()
	for i := 0; i < d.cfg.Workers; i++ {
		go func() { defer wg.Done(); d.work(ctx) }()
	}
	select {
	case <-ctx.Done():
	case <-d.stop:
	}
	cancel()
	d.queue.shutDown()
	d.expiry.Stop()
	wg.Wait()
	select {
	case <-d.stop:
		return nil
	default:
		return ctx.Err()
	}
}

// Close stops gracefully: every campaign held is drained and released, then the stream is
// half-closed (this process is done: the server gives its campaigns to others at once), and
// Run returns. When ctx ends first, Run returns all the same.
func (d *Dialer) Close(ctx context.Context) error {
	d.mu.Lock()
	d.closing = true
	d.enqueueAllLocked()
	d.mu.Unlock()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for !d.letGo() && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-d.done:
			return nil
		case <-tick.C:
		}
	}
	if err == nil {
		d.sendMu.Lock()
		d.halfClosed = true
		stream := d.stream
		if stream != nil {
			stream.CloseSend()
		}
		d.sendMu.Unlock()
		if stream == nil {
			d.hasGone() // no stream to leave on: the session ends with its ttl
		}
		select {
		case <-d.left:
		case <-ctx.Done():
			err = ctx.Err()
		case <-d.done:
		}
	}
	d.stopOnce.Do(func() { close(d.stop) })
	<-d.done
	return err
}

// letGo says whether nothing is dialed any more and every lease was released.
func (d *Dialer) letGo() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.dialing) > 0 {
		return false
	}
	for _, l := range d.leases {
		if !l.released && time.Now().Before(d.deadline) {
			return false
		}
	}
	return true
}

// ReportOutdialExhausted reports that the campaign's outdial list has no targets left, with
// the fencing token of this process's lease on it: never for a campaign it does not hold.
func (d *Dialer) ReportOutdialExhausted(ctx context.Context, customerID, campaignID string) (
	*campaignv1.Campaign, error) {
	d.mu.Lock()
	l := d.leases[campaignID]
	live := time.Now().Before(d.deadline)
	d.mu.Unlock()
	if l == nil || !live {
		return nil, status.Errorf(codes.FailedPrecondition, "this dialer holds no lease on %s", campaignID)
	}
	answer, err := d.cfg.Client.ReportOutdialExhausted(ctx, &campaignv1.ReportOutdialExhaustedRequest{
		CustomerId: customerID, Id: campaignID, FencingToken: l.token,
	})
	if err != nil {
		if reasonOf(err) == "LEASE_NOT_HELD" {
			d.forget(campaignID, l.token)
		}
		return nil, err
	}
	return answer.Campaign, nil
}

// -- the informer: the campaigns as the watch says ----------------------------------------

func (d *Dialer) inform(ctx context.Context) {
	request := &campaignv1.WatchStatusRequest{
		CustomerId: d.cfg.CustomerID, View: campaignv1.WatchView_WATCH_VIEW_FULL,
	}
	for {
		watchCtx, cancel := context.WithCancel(ctx)
		d.mu.Lock()
		d.cancelWatch = cancel
		d.mu.Unlock()
		err := WatchStreams(watchCtx, d.cfg.Client, request, d.resuming, func(item *campaignv1.WatchStatusResponse) error {
			d.observe(item)
			request.AfterRevision = item.Revision
			if item.Timeline != "" {
				request.Timeline = item.Timeline
			}
			return nil
		})
		cancel()
		if ctx.Err() != nil {
			return
		}
		if watchCtx.Err() != nil {
			continue // resumed on purpose: see expire
		}
		if status.Code(err) == codes.OutOfRange { // the log has moved on: a snapshot again
			request.AfterRevision, request.Timeline = 0, ""
		}
		d.cfg.Logf("dialer %s: watch: %v", d.cfg.Holder, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// resuming: a stream ended, or starts, with a snapshot or a replay; until it has caught up,
// its view is history, which nothing acts on.
func (d *Dialer) resuming(request *campaignv1.WatchStatusRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.synced = false
	d.snapshot = nil
	if request.AfterRevision == 0 {
		d.snapshot = map[string]bool{}
	}
}

func (d *Dialer) observe(item *campaignv1.WatchStatusResponse) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch item.Kind {
	case campaignv1.WatchStatusResponse_KIND_SNAPSHOT:
		d.put(item)
		if d.snapshot != nil {
			d.snapshot[item.CampaignId] = true
		}
	case campaignv1.WatchStatusResponse_KIND_SNAPSHOT_END:
		for id := range d.campaigns {
			if d.snapshot != nil && !d.snapshot[id] {
				delete(d.campaigns, id)
			}
		}
		d.snapshot = nil
		d.caughtUp()
	case campaignv1.WatchStatusResponse_KIND_CHANGE:
		d.put(item)
		if d.synced {
			d.queue.add(item.CampaignId)
		}
	case campaignv1.WatchStatusResponse_KIND_HEARTBEAT:
		if !d.synced && d.snapshot == nil {
			d.caughtUp()
		}
	}
}

func (d *Dialer) put(item *campaignv1.WatchStatusResponse) {
	if known := d.campaigns[item.CampaignId]; known != nil && known.revision >= item.Revision {
		return
	}
	d.campaigns[item.CampaignId] = &campaignState{
		revision:     item.Revision,
		customerID:   item.CustomerId,
		status:       item.Status,
		stopRevision: item.StopRevision,
		deleted:      item.Deleted,
		campaign:     item.Campaign,
	}
}

// caughtUp: the view is current; every campaign is reconciled with it.
func (d *Dialer) caughtUp() {
	d.synced = true
	d.enqueueAllLocked()
}

func (d *Dialer) enqueueAllLocked() {
	for id := range d.campaigns {
		d.queue.add(id)
	}
	for id := range d.leases {
		d.queue.add(id)
	}
	for id := range d.dialing {
		d.queue.add(id)
	}
}

// -- the leases: the HoldLeases stream ------------------------------------------------------

func (d *Dialer) hold(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		joined, err := d.holdOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if d.hasLeft() {
			d.hasGone()
			return
		}
		switch reasonOf(err) {
		case "LEASE_SESSION_EXPIRED":
			d.loseAll() // another process may hold them now
		case "LEASE_SESSION_TAKEN_OVER":
			// Another process joined with this holder identity: two of them would take the
			// session from each other for ever. This one drains and stops.
			d.loseAll()
			d.cfg.Logf("dialer %s: another process joined with this holder identity; stopping",
				d.cfg.Holder)
			for !d.letGo() {
				select {
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			d.stopOnce.Do(func() { close(d.stop) })
			return
		}
		if err != nil {
			d.cfg.Logf("dialer %s: leases: %v", d.cfg.Holder, err)
		}
		if joined {
			backoff = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > time.Second { // well within the ttl: a reconnect keeps the leases
			backoff = time.Second
		}
	}
}

func (d *Dialer) hasGone() { d.leftOnce.Do(func() { close(d.left) }) }

func (d *Dialer) hasLeft() bool {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	return d.halfClosed
}

// holdOnce joins on one stream and follows it until it ends.
func (d *Dialer) holdOnce(ctx context.Context) (joined bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := d.cfg.Client.HoldLeases(ctx)
	if err != nil {
		return false, err
	}
	d.mu.Lock()
	wait := 10 * time.Second // an unanswered join is given up
	if d.ttl > 0 {
		wait = d.ttl
	}
	d.mu.Unlock()
	unanswered := time.AfterFunc(wait, cancel)
	sent := time.Now()
	err = stream.Send(&campaignv1.HoldLeasesRequest{Kind: &campaignv1.HoldLeasesRequest_Join_{
		Join: &campaignv1.HoldLeasesRequest_Join{
			Holder: d.cfg.Holder, CustomerId: d.cfg.CustomerID, Capacity: d.cfg.Capacity,
		},
	}})
	if err != nil { // the stream ended: Recv says why
		_, err = stream.Recv()
		unanswered.Stop()
		return false, err
	}
	first, err := stream.Recv()
	unanswered.Stop()
	if err != nil {
		return false, err
	}
	if first.Kind != campaignv1.HoldLeasesResponse_KIND_JOINED {
		return false, fmt.Errorf("the first answer is %v, not KIND_JOINED", first.Kind)
	}
	s := &leaseStream{cancel: cancel, regranting: true}
	d.mu.Lock()
	// A drain after a lost lease must end before the lease can be granted elsewhere: the
	// leases count as lost one keep-alive interval before ttl runs out.
	d.ttl = first.Ttl.AsDuration() - first.KeepAliveInterval.AsDuration()
	d.current = s
	d.extend(sent.Add(d.ttl))
	for _, l := range d.leases {
		l.granted, l.released = false, false
	}
	d.mu.Unlock()

	d.sendMu.Lock()
	if d.halfClosed { // Close came meanwhile
		d.sendMu.Unlock()
		return true, nil
	}
	d.stream = stream
	d.sendMu.Unlock()
	defer func() {
		d.sendMu.Lock()
		if d.stream == stream {
			d.stream = nil
		}
		d.sendMu.Unlock()
	}()
	go d.keepAlive(ctx, s, stream, first.KeepAliveInterval.AsDuration())
	for {
		m, err := stream.Recv()
		if err == io.EOF && d.hasLeft() {
			return true, nil
		}
		if err == io.EOF {
			return true, status.Error(codes.Unavailable, "the server ended the stream")
		}
		if err != nil {
			return true, err
		}
		d.received(s, m)
	}
}

// keepAlive sends a keep_alive at once (its answer ends the grants of a join), then every
// interval, noting when each went out.
func (d *Dialer) keepAlive(ctx context.Context, s *leaseStream,
	stream campaignv1.CampaignService_HoldLeasesClient, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		d.sendMu.Lock()
		if d.halfClosed {
			d.sendMu.Unlock()
			return
		}
		d.mu.Lock()
		s.pending = append(s.pending, time.Now())
		d.mu.Unlock()
		err := stream.Send(&campaignv1.HoldLeasesRequest{
			Kind: &campaignv1.HoldLeasesRequest_KeepAlive_{KeepAlive: &campaignv1.HoldLeasesRequest_KeepAlive{}},
		})
		d.sendMu.Unlock()
		if err != nil {
			s.cancel()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *Dialer) received(s *leaseStream, m *campaignv1.HoldLeasesResponse) {
	d.mu.Lock()
	defer d.mu.Unlock()
	lease := m.GetLease()
	id, token := lease.GetCampaignId(), lease.GetFencingToken()
	held := d.leases[id]
	switch m.Kind {
	case campaignv1.HoldLeasesResponse_KIND_GRANTED:
		if held == nil || held.token != token {
			held = &heldLease{customerID: lease.CustomerId, token: token}
			d.leases[id] = held
		}
		held.granted = true
		d.queue.add(id)
	case campaignv1.HoldLeasesResponse_KIND_RELEASE_REQUESTED:
		if held != nil && held.token == token {
			held.releaseRequested = true
		}
		d.queue.add(id)
	case campaignv1.HoldLeasesResponse_KIND_LOST:
		if held != nil && held.token <= token {
			delete(d.leases, id)
		}
		d.queue.add(id)
	case campaignv1.HoldLeasesResponse_KIND_KEPT_ALIVE:
		if len(s.pending) > 0 {
			d.extend(s.pending[0].Add(d.ttl))
			s.pending = s.pending[1:]
		}
		if s.regranting {
			s.regranting = false
			for id, l := range d.leases {
				if !l.granted { // ended while the stream was down
					delete(d.leases, id)
					d.queue.add(id)
				}
			}
		}
	}
}

// extend moves the local deadline: ttl (less one keep-alive interval, see holdOnce) after
// the send of the last keep-alive answered.
func (d *Dialer) extend(deadline time.Time) {
	if deadline.After(d.deadline) {
		d.deadline = deadline
		d.expiry.Reset(time.Until(deadline))
	}
}

// expire: no keep-alive answered for ttl. The leases may be held elsewhere now: every one
// counts as lost, and the stream, silent or slow, is given up for a new one. The watch may
// be cut off as well without knowing it yet (it waits three heartbeat intervals): it
// resumes too, so that nothing acts on its view before it has caught up again.
func (d *Dialer) expire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Now().Before(d.deadline) {
		return
	}
	d.loseAllLocked()
	if d.current != nil {
		d.current.cancel()
	}
	d.synced = false
	if d.cancelWatch != nil {
		d.cancelWatch()
	}
}

func (d *Dialer) loseAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.loseAllLocked()
}

func (d *Dialer) loseAllLocked() {
	for id := range d.leases {
		delete(d.leases, id)
		d.queue.add(id)
	}
}

// forget drops a lease the server says this process no longer holds.
func (d *Dialer) forget(id string, token int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l := d.leases[id]; l != nil && l.token == token {
		delete(d.leases, id)
	}
	d.queue.add(id)
}

// -- the controller: one reconcile per campaign at a time ----------------------------------

// errMovedOn: the server's answer shows a state newer than the one acted on.
var errMovedOn = errors.New("the campaign's state moved on")

func (d *Dialer) work(ctx context.Context) {
	for {
		id, ok := d.queue.get()
		if !ok {
			return
		}
		err := d.reconcile(ctx, id)
		d.queue.done(id)
		if ctx.Err() != nil {
			continue
		}
		d.mu.Lock()
		if err == nil {
			delete(d.failures, id)
			d.mu.Unlock()
			continue
		}
		d.failures[id]++
		backoff := 50 * time.Millisecond << minInt(d.failures[id], 8)
		d.mu.Unlock()
		if err != errMovedOn {
			d.cfg.Logf("dialer %s: campaign %s: %v (again in %v)", d.cfg.Holder, id, err, backoff)
		}
		d.queue.addAfter(id, backoff)
	}
}

// reconcile brings one campaign to what its state and lease ask: dialed while held, not
// asked to let go and running; otherwise drained, then a stop confirmed or a lease released.
func (d *Dialer) reconcile(ctx context.Context, id string) error {
	d.mu.Lock()
	var c campaignState
	known := d.campaigns[id] != nil
	if known {
		c = *d.campaigns[id]
	}
	var l heldLease
	held := d.leases[id] != nil && time.Now().Before(d.deadline)
	if held {
		l = *d.leases[id]
	}
	dialing, synced, closing := d.dialing[id], d.synced, d.closing
	d.mu.Unlock()

	letGo := held && (l.releaseRequested || closing)
	if held && !letGo && !synced {
		return nil // the watch catches up first, then reconciles every campaign
	}
	if held && !letGo && known && !c.deleted && c.status == campaignv1.Campaign_STATUS_RUN {
		d.mu.Lock()
		d.dialing[id] = true
		d.mu.Unlock()
		return d.cfg.Dial(ctx, c.campaign)
	}
	stopping := synced && known && !c.deleted && c.status == campaignv1.Campaign_STATUS_STOPPING
	if dialing || (held && (stopping || letGo)) {
		if err := d.cfg.Drain(ctx, id); err != nil {
			return err
		}
		d.mu.Lock()
		delete(d.dialing, id)
		d.mu.Unlock()
	}
	if !held {
		return nil
	}
	if stopping {
		call, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := d.cfg.Client.ConfirmDrained(call, &campaignv1.ConfirmDrainedRequest{
			CustomerId: c.customerID, Id: id, StopRevision: c.stopRevision, FencingToken: l.token,
		})
		switch reasonOf(err) {
		case "":
			if err != nil {
				return err
			}
		case "STOP_REVISION_MISMATCH", "CAMPAIGN_NOT_STOPPING":
			return errMovedOn // the watch brings the newer state, and the campaign again
		case "LEASE_NOT_HELD":
			d.forget(id, l.token)
			return nil
		default:
			return err
		}
	}
	if letGo && !l.released {
		return d.release(id, l.token)
	}
	return nil
}

func (d *Dialer) release(id string, token int64) error {
	d.sendMu.Lock()
	if d.halfClosed { // the stream says this process is done: every lease goes
		d.sendMu.Unlock()
		return nil
	}
	if d.stream == nil {
		d.sendMu.Unlock()
		return status.Error(codes.Unavailable, "no HoldLeases stream to release the lease on")
	}
	err := d.stream.Send(&campaignv1.HoldLeasesRequest{Kind: &campaignv1.HoldLeasesRequest_Release_{
		Release: &campaignv1.HoldLeasesRequest_Release{CampaignId: id, FencingToken: token},
	}})
	d.sendMu.Unlock()
	if err != nil {
		return status.Errorf(codes.Unavailable, "release: %v", err)
	}
	d.mu.Lock()
	if l := d.leases[id]; l != nil && l.token == token {
		l.released = true
	}
	d.mu.Unlock()
	return nil
}

// reasonOf is the ErrorInfo reason of an error of ours ("" for none).
func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	return DetailsOf(err).Reason()
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// -- the work queue (client-go's): a campaign queued while it is reconciled runs again after

type workQueue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	queue      []string
	dirty      map[string]bool // queued, or to queue again once its reconcile ends
	processing map[string]bool
	shut       bool
}

func newWorkQueue() *workQueue {
	q := &workQueue{dirty: map[string]bool{}, processing: map[string]bool{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *workQueue) add(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shut || q.dirty[id] {
		return
	}
	q.dirty[id] = true
	if !q.processing[id] {
		q.queue = append(q.queue, id)
		q.cond.Signal()
	}
}

func (q *workQueue) addAfter(id string, delay time.Duration) {
	time.AfterFunc(delay, func() { q.add(id) })
}

func (q *workQueue) get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shut {
		q.cond.Wait()
	}
	if q.shut {
		return "", false
	}
	id := q.queue[0]
	q.queue = q.queue[1:]
	q.processing[id] = true
	delete(q.dirty, id)
	return id, true
}

func (q *workQueue) done(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, id)
	if q.dirty[id] {
		q.queue = append(q.queue, id)
		q.cond.Signal()
	}
}

func (q *workQueue) shutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shut = true
	q.cond.Broadcast()
}

// randomHex is n random bytes in hex: a holder identity's suffix.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
