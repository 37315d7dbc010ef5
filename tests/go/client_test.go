package campaignclient_test

// campaign.v1 from Go (grpc-go and the module clients/go) against real servers, as a
// backend such as the dialer uses it. `make test` runs it (tests/e2e/test_go_client.py, which sets
// up the GOPATH it builds in); alone: .venv/bin/python -m pytest tests/e2e/test_go_client.py

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const domain = "campaign-grpc"

// shared serves the tests that need nothing but a server; each works for customers of its own.
var shared *server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "campaign-go-client-")
	if err != nil {
		panic(err)
	}
	shared, err = newServer(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	shared.kill()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "log of the shared server:\n%s", shared.logText())
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func connect(t *testing.T, s *server) campaignv1.CampaignServiceClient {
	t.Helper()
	conn, err := campaignclient.Dial(s.address, grpc.WithInsecure(), campaignclient.WithToken(dialerToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return campaignv1.NewCampaignServiceClient(conn)
}

// deadline bounds one call, as every call of a backend should be.
func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func runnable(customer string) *campaignv1.Campaign {
	option, err := structpb.NewStruct(map[string]interface{}{"text": "hello"})
	if err != nil {
		panic(err)
	}
	return &campaignv1.Campaign{
		CustomerId: customer,
		Type:       campaignv1.Campaign_TYPE_CALL,
		Name:       "go promo",
		OutplanId:  newID(),
		OutdialId:  newID(),
		Actions:    []*campaignv1.Action{{Type: "answer"}, {Type: "talk", Option: option}},
	}
}

func create(t *testing.T, client campaignv1.CampaignServiceClient, campaign *campaignv1.Campaign) *campaignv1.Campaign {
	t.Helper()
	created, err := client.CreateCampaign(deadline(t), &campaignv1.CreateCampaignRequest{
		Campaign: campaign, RequestId: newID(),
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return created.Campaign
}

func setStatus(t *testing.T, client campaignv1.CampaignServiceClient, c *campaignv1.Campaign,
	to campaignv1.Campaign_Status) *campaignv1.Campaign {
	t.Helper()
	changed, err := client.UpdateCampaignStatus(deadline(t), &campaignv1.UpdateCampaignStatusRequest{
		CustomerId: c.CustomerId, Id: c.Id, Status: to,
	})
	if err != nil {
		t.Fatalf("status %v: %v", to, err)
	}
	return changed.Campaign
}

// failsWith checks that err carries code and an ErrorInfo of ours with reason.
func failsWith(t *testing.T, err error, code codes.Code, reason string) campaignclient.Details {
	t.Helper()
	if err == nil {
		t.Fatalf("the call succeeded; expected %v %s", code, reason)
	}
	details := campaignclient.DetailsOf(err)
	if details.Code != code || details.Reason() != reason || details.Info.Domain != domain {
		t.Fatalf("expected %v with ErrorInfo %s/%s, got %v: %+v", code, domain, reason, err, details.Info)
	}
	return details
}

func TestCreateRetriedWithItsRequestIDCreatesOnce(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	request := &campaignv1.CreateCampaignRequest{Campaign: runnable(customer), RequestId: newID()}

	first, err := client.CreateCampaign(deadline(t), request)
	if err != nil {
		t.Fatal(err)
	}
	// Its reply lost, the backend sends the create again, even with a body changed meanwhile.
	request.Campaign.Name = "changed before the retry"
	again, err := client.CreateCampaign(deadline(t), request)
	if err != nil {
		t.Fatal(err)
	}

	c := first.Campaign
	if !proto.Equal(again.Campaign, c) {
		t.Fatalf("the retry returned another campaign:\n%v\n%v", again.Campaign, c)
	}
	if len(c.Id) != 36 || c.Status != campaignv1.Campaign_STATUS_STOP || c.Name != "go promo" ||
		c.EndHandle != campaignv1.Campaign_END_HANDLE_STOP || c.TmCreate == nil || c.TmUpdate != nil {
		t.Fatalf("unexpected new campaign: %v", c)
	}
	if c.Actions[1].Id == "" || c.Actions[1].Option.Fields["text"].GetStringValue() != "hello" {
		t.Fatalf("actions not kept: %v", c.Actions)
	}

	got, err := client.GetCampaign(deadline(t), &campaignv1.GetCampaignRequest{CustomerId: customer, Id: c.Id})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Campaign, c) {
		t.Fatalf("get returned %v, created %v", got.Campaign, c)
	}
	listed, err := client.ListCampaigns(deadline(t), &campaignv1.ListCampaignsRequest{CustomerId: customer})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.Campaigns) != 1 || listed.NextPageToken != "" {
		t.Fatalf("expected the one campaign, listed %d (next page %q)", len(listed.Campaigns), listed.NextPageToken)
	}
}

func TestGetOfAnUnknownCampaignIsNotFound(t *testing.T) {
	client := connect(t, shared)
	_, err := client.GetCampaign(deadline(t), &campaignv1.GetCampaignRequest{CustomerId: newID(), Id: newID()})
	failsWith(t, err, codes.NotFound, "CAMPAIGN_NOT_FOUND")
}

func TestListPagesThroughEveryCampaignOnceNewestFirst(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	var created []string
	for i := 0; i < 250; i++ {
		c := runnable(customer)
		c.OutdialId = "" // an outdial belongs to one live campaign; these never run
		created = append(created, create(t, client, c).Id)
	}

	var listed []string
	pages := 0
	request := &campaignv1.ListCampaignsRequest{CustomerId: customer, PageSize: 40}
	for {
		page, err := client.ListCampaigns(deadline(t), request)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Campaigns) > 40 {
			t.Fatalf("a page of %d campaigns, asked for 40", len(page.Campaigns))
		}
		for _, c := range page.Campaigns {
			listed = append(listed, c.Id)
		}
		if pages++; pages == 2 {
			// A campaign created during the walk is newer than where it is: it is not listed.
			create(t, client, &campaignv1.Campaign{CustomerId: customer, Type: campaignv1.Campaign_TYPE_FLOW})
		}
		if page.NextPageToken == "" {
			break
		}
		request.PageToken = page.NextPageToken
	}

	if pages != 7 || len(listed) != len(created) {
		t.Fatalf("%d campaigns in %d pages, expected %d in 7", len(listed), pages, len(created))
	}
	for i, id := range listed {
		if id != created[len(created)-1-i] {
			t.Fatalf("campaign %d of the walk is %s, expected %s (newest first)", i, id, created[len(created)-1-i])
		}
	}
}

func TestUpdateChangesTheMaskedFieldsAndAStaleEtagIsRefused(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	c := create(t, client, runnable(customer))

	updated, err := client.UpdateCampaign(deadline(t), &campaignv1.UpdateCampaignRequest{
		Campaign: &campaignv1.Campaign{
			CustomerId: customer, Id: c.Id, Etag: c.Etag, Name: "renamed", Detail: "not in the mask",
		},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := updated.Campaign
	if u.Name != "renamed" || u.Detail != c.Detail || u.Etag == c.Etag || u.TmUpdate == nil ||
		!proto.Equal(u.Actions[1], c.Actions[1]) {
		t.Fatalf("expected only the name changed (and a new etag): %v", u)
	}

	// A second writer still holding the first etag is refused, and told the current one.
	stale := &campaignv1.UpdateCampaignRequest{
		Campaign:   &campaignv1.Campaign{CustomerId: customer, Id: c.Id, Etag: c.Etag, Name: "stale"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
	}
	_, err = client.UpdateCampaign(deadline(t), stale)
	details := failsWith(t, err, codes.Aborted, "ETAG_MISMATCH")
	current := details.Metadata()["etag"]
	if current != u.Etag {
		t.Fatalf("ErrorInfo metadata etag %q, expected the current %q", current, u.Etag)
	}
	got, err := client.GetCampaign(deadline(t), &campaignv1.GetCampaignRequest{CustomerId: customer, Id: c.Id})
	if err != nil || !proto.Equal(got.Campaign, u) {
		t.Fatalf("the refused update changed the campaign: %v %v", got, err)
	}

	// Having looked again, it sends its change with the current etag.
	stale.Campaign.Etag = current
	again, err := client.UpdateCampaign(deadline(t), stale)
	if err != nil || again.Campaign.Name != "stale" {
		t.Fatalf("update with the current etag: %v %v", again, err)
	}
}

func TestRunWithoutAnOutplanNamesTheUnmetCondition(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	campaign := runnable(customer)
	campaign.OutplanId = ""
	c := create(t, client, campaign)

	_, err := client.UpdateCampaignStatus(deadline(t), &campaignv1.UpdateCampaignStatusRequest{
		CustomerId: customer, Id: c.Id, Status: campaignv1.Campaign_STATUS_RUN,
	})
	details := failsWith(t, err, codes.FailedPrecondition, "RUN_CONDITIONS_UNMET")
	if len(details.Precondition.Violations) != 1 {
		t.Fatalf("expected one precondition violation: %v", details.Precondition)
	}
	violation := details.Precondition.Violations[0]
	if violation.Type != "OUTPLAN_MISSING" || violation.Subject != "outplan_id" || violation.Description == "" {
		t.Fatalf("unexpected violation: %v", violation)
	}
}

func TestInvalidArgumentNamesEveryBadField(t *testing.T) {
	client := connect(t, shared)
	_, err := client.CreateCampaign(deadline(t), &campaignv1.CreateCampaignRequest{
		Campaign: &campaignv1.Campaign{CustomerId: "not-a-uuid", Type: campaignv1.Campaign_TYPE_CALL, ServiceLevel: 200},
	})
	details := failsWith(t, err, codes.InvalidArgument, "INVALID_ARGUMENT")
	if len(details.BadRequest.FieldViolations) == 0 {
		t.Fatal("no BadRequest in the error")
	}
	var fields []string
	for _, violation := range details.BadRequest.FieldViolations {
		if violation.Description == "" {
			t.Fatalf("a violation without a description: %v", violation)
		}
		fields = append(fields, violation.Field)
	}
	sort.Strings(fields)
	if fmt.Sprint(fields) != "[campaign.customer_id campaign.service_level]" {
		t.Fatalf("bad fields %v", fields)
	}
}

func TestACallWithoutAKnownTokenIsUnauthenticated(t *testing.T) {
	conn, err := grpc.Dial(shared.address, grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	request := &campaignv1.GetCampaignRequest{CustomerId: newID(), Id: newID()}
	_, err = campaignv1.NewCampaignServiceClient(conn).GetCampaign(deadline(t), request)
	failsWith(t, err, codes.Unauthenticated, "TOKEN_MISSING")

	other, err := campaignclient.Dial(shared.address, grpc.WithInsecure(), campaignclient.WithToken(randomHex(32)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, err = campaignv1.NewCampaignServiceClient(other).GetCampaign(deadline(t), request)
	failsWith(t, err, codes.Unauthenticated, "TOKEN_UNKNOWN")
}

// A status that the client library or the transport makes has no details: DetailsOf gives its
// code, an empty reason and metadata, and no nil field; one the server sends keeps its own.
func TestDetailsOfAStatusTheServerDidNotSendAreEmpty(t *testing.T) {
	request := &campaignv1.GetCampaignRequest{CustomerId: newID(), Id: newID()}

	// A server that is down: nothing listens on the port any more.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listener.Close()
	down, err := campaignclient.Dial(listener.Addr().String(), grpc.WithInsecure(), campaignclient.WithToken(dialerToken))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	_, err = campaignv1.NewCampaignServiceClient(down).GetCampaign(deadline(t), request)
	withoutDetails(t, err, codes.Unavailable)

	// The client's own deadline, over before an answer could come.
	client := connect(t, shared)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	_, err = client.GetCampaign(ctx, request)
	withoutDetails(t, err, codes.DeadlineExceeded)

	// A request over the client's own limit on what it sends: refused before it is sent.
	_, err = client.GetCampaign(deadline(t), request, grpc.MaxCallSendMsgSize(10))
	withoutDetails(t, err, codes.ResourceExhausted)

	// An error the server sends: its reason and metadata.
	c := create(t, client, runnable(newID()))
	update := &campaignv1.UpdateCampaignRequest{
		Campaign:   &campaignv1.Campaign{CustomerId: c.CustomerId, Id: c.Id, Etag: c.Etag, Name: "renamed"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}},
	}
	updated, err := client.UpdateCampaign(deadline(t), update)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.UpdateCampaign(deadline(t), update) // with the etag it replaced
	details := campaignclient.DetailsOf(err)
	if details.Code != codes.Aborted || details.Reason() != "ETAG_MISMATCH" ||
		details.Metadata()["etag"] != updated.Campaign.Etag {
		t.Fatalf("expected ABORTED ETAG_MISMATCH naming etag %s, got %v: %+v", updated.Campaign.Etag, err, details)
	}
}

// withoutDetails checks that err has code and no details, and that reading them is safe.
func withoutDetails(t *testing.T, err error, code codes.Code) {
	t.Helper()
	details := campaignclient.DetailsOf(err)
	if details.Code != code || details.Reason() != "" || len(details.Metadata()) != 0 ||
		details.Info.Reason != "" || details.Info.Metadata["etag"] != "" ||
		len(details.BadRequest.FieldViolations) != 0 || len(details.Precondition.Violations) != 0 ||
		len(details.Quota.Violations) != 0 {
		t.Fatalf("expected %v without details, got %v: %+v", code, err, details)
	}
	t.Logf("%v: %v", code, err)
}

func TestRunStopAndConfirmTheDrain(t *testing.T) {
	client := connect(t, shared)
	customer := newID()
	c := create(t, client, runnable(customer))
	w := watch(t, client, &campaignv1.WatchStatusRequest{
		CustomerId: customer, CampaignId: c.Id, View: campaignv1.WatchView_WATCH_VIEW_FULL,
	}, false)
	snapshot := w.next(t)
	if snapshot.Kind != campaignv1.WatchStatusResponse_KIND_SNAPSHOT || !proto.Equal(snapshot.Campaign, c) {
		t.Fatalf("expected the campaign's snapshot in full, got %v", snapshot)
	}
	end := w.next(t)
	if end.Kind != campaignv1.WatchStatusResponse_KIND_SNAPSHOT_END || end.HeartbeatInterval.AsDuration() != 500*time.Millisecond {
		t.Fatalf("expected the snapshot's end with the heartbeat interval, got %v", end)
	}

	if ran := setStatus(t, client, c, campaignv1.Campaign_STATUS_RUN); ran.Status != campaignv1.Campaign_STATUS_RUN {
		t.Fatalf("RUN: %v", ran)
	}
	// STOP only asks: the dialer drains the campaign's calls, then confirms this stop.
	stopping := setStatus(t, client, c, campaignv1.Campaign_STATUS_STOP)
	if stopping.Status != campaignv1.Campaign_STATUS_STOPPING || stopping.StopRevision == 0 {
		t.Fatalf("STOP of a running campaign: %v", stopping)
	}
	w.nextChange(t) // RUN
	change := w.nextChange(t)
	if change.Status != campaignv1.Campaign_STATUS_STOPPING || change.StopRevision != stopping.StopRevision ||
		change.Revision != stopping.StopRevision || !proto.Equal(change.Campaign, stopping) {
		t.Fatalf("the stream's STOPPING change %v does not name the stop %d", change, stopping.StopRevision)
	}

	// A confirmation of another stop (a late one, say) completes nothing and names the current.
	_, err := client.ConfirmDrained(deadline(t), &campaignv1.ConfirmDrainedRequest{
		CustomerId: customer, Id: c.Id, StopRevision: stopping.StopRevision - 1,
	})
	details := failsWith(t, err, codes.FailedPrecondition, "STOP_REVISION_MISMATCH")
	if details.Metadata()["stop_revision"] != fmt.Sprint(stopping.StopRevision) {
		t.Fatalf("ErrorInfo metadata %v does not name the current stop %d", details.Metadata(), stopping.StopRevision)
	}

	confirm := &campaignv1.ConfirmDrainedRequest{CustomerId: customer, Id: c.Id, StopRevision: change.StopRevision}
	confirmed, err := client.ConfirmDrained(deadline(t), confirm)
	if err != nil || confirmed.Campaign.Status != campaignv1.Campaign_STATUS_STOP {
		t.Fatalf("ConfirmDrained: %v %v", confirmed, err)
	}
	// Its reply lost, the dialer confirms again: nothing changes.
	again, err := client.ConfirmDrained(deadline(t), confirm)
	if err != nil || !proto.Equal(again.Campaign, confirmed.Campaign) {
		t.Fatalf("a repeated ConfirmDrained changed something: %v %v", again, err)
	}

	drained := w.nextChange(t)
	if drained.Reason != campaignv1.WatchStatusResponse_REASON_DRAINED ||
		drained.PreviousStatus != campaignv1.Campaign_STATUS_STOPPING ||
		drained.Status != campaignv1.Campaign_STATUS_STOP || !proto.Equal(drained.Campaign, confirmed.Campaign) {
		t.Fatalf("expected the drained stop on the stream, got %v", drained)
	}
	w.nothingButHeartbeats(t, 2*time.Second) // the repeated confirmation wrote nothing
}

func TestWatchResumesAcrossARestartWithoutMissingOrRepeatingAChange(t *testing.T) {
	s := startServer(t)
	recorder := &recordingClient{CampaignServiceClient: connect(t, s)}
	customer := newID()
	first := create(t, recorder, runnable(customer))
	w := watch(t, recorder, &campaignv1.WatchStatusRequest{CustomerId: customer}, true)
	if snapshot := w.next(t); snapshot.CampaignId != first.Id {
		t.Fatalf("expected the snapshot of %s, got %v", first.Id, snapshot)
	}
	if end := w.next(t); end.Kind != campaignv1.WatchStatusResponse_KIND_SNAPSHOT_END {
		t.Fatalf("expected the end of the snapshot, got %v", end)
	}
	setStatus(t, recorder, first, campaignv1.Campaign_STATUS_RUN)
	ran := w.heldChange(t)

	// While the watch is busy with that change, the server restarts on the same database, and
	// changes are made that the watch can only learn from the log.
	s.terminate(t)
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	writer := connect(t, s)
	second := create(t, writer, runnable(customer))
	setStatus(t, writer, first, campaignv1.Campaign_STATUS_STOP)
	w.release()

	created, stopping := w.nextChange(t), w.nextChange(t)
	if created.CampaignId != second.Id || created.Reason != campaignv1.WatchStatusResponse_REASON_CREATED ||
		stopping.CampaignId != first.Id || stopping.Status != campaignv1.Campaign_STATUS_STOPPING ||
		created.Revision <= ran.Revision || stopping.Revision <= created.Revision {
		t.Fatalf("after revision %d, expected the create of %s then the stop of %s, got\n%v\n%v",
			ran.Revision, second.Id, first.Id, created, stopping)
	}
	if resumed := recorder.lastWatch().AfterRevision; resumed != ran.Revision {
		t.Fatalf("the watch resumed after revision %d, not after the %d it handled", resumed, ran.Revision)
	}
	// Caught up, the stream says so at once with a heartbeat at the last revision.
	caughtUp := w.next(t)
	if caughtUp.Kind != campaignv1.WatchStatusResponse_KIND_HEARTBEAT || caughtUp.Revision != stopping.Revision {
		t.Fatalf("expected a heartbeat at revision %d, got %v", stopping.Revision, caughtUp)
	}

	live := setStatus(t, writer, second, campaignv1.Campaign_STATUS_RUN)
	if change := w.nextChange(t); change.CampaignId != live.Id || change.Revision <= stopping.Revision {
		t.Fatalf("expected the live change of %s, got %v", live.Id, change)
	}
}

func TestASilentWatchIsAbandonedAndResumed(t *testing.T) {
	s := startServer(t)
	recorder := &recordingClient{CampaignServiceClient: connect(t, s)}
	customer := newID()
	c := create(t, recorder, runnable(customer))
	w := watch(t, recorder, &campaignv1.WatchStatusRequest{CustomerId: customer}, false)
	w.next(t)
	if end := w.next(t); end.Kind != campaignv1.WatchStatusResponse_KIND_SNAPSHOT_END {
		t.Fatalf("expected the end of the snapshot, got %v", end)
	}

	// A server that hangs (here: stopped by SIGSTOP) keeps its connections open and says
	// nothing; after three heartbeat intervals the watch gives up on the stream and calls again.
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return recorder.watchCalls() >= 3 })
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	ran := setStatus(t, connect(t, s), c, campaignv1.Campaign_STATUS_RUN)
	change := w.nextChange(t)
	if change.CampaignId != ran.Id || change.Status != campaignv1.Campaign_STATUS_RUN {
		t.Fatalf("expected the RUN of %s, got %v", ran.Id, change)
	}
	w.nothingButHeartbeats(t, 2*time.Second)
}

// -- helpers -----------------------------------------------------------------------------

// watcher runs Watch in the background and hands over its messages. A gated one holds each
// message in Watch's handler until the test releases it.
type watcher struct {
	items    chan *campaignv1.WatchStatusResponse
	released chan struct{}
	done     chan error
	gated    bool
}

func watch(t *testing.T, client campaignv1.CampaignServiceClient, req *campaignv1.WatchStatusRequest,
	gated bool) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		items:    make(chan *campaignv1.WatchStatusResponse, 1000),
		released: make(chan struct{}),
		done:     make(chan error, 1),
		gated:    gated,
	}
	go func() {
		w.done <- campaignclient.Watch(ctx, client, req, func(item *campaignv1.WatchStatusResponse) error {
			w.items <- item
			if !gated {
				return nil
			}
			select {
			case <-w.released:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// held is the next message; a gated watch waits in its handler until release.
func (w *watcher) held(t *testing.T) *campaignv1.WatchStatusResponse {
	t.Helper()
	select {
	case item := <-w.items:
		return item
	case err := <-w.done:
		t.Fatalf("the watch ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no message within 30 s")
	}
	return nil
}

func (w *watcher) release() {
	if w.gated {
		w.released <- struct{}{}
	}
}

func (w *watcher) next(t *testing.T) *campaignv1.WatchStatusResponse {
	t.Helper()
	item := w.held(t)
	w.release()
	return item
}

// heldChange is the next message that is not a heartbeat, held.
func (w *watcher) heldChange(t *testing.T) *campaignv1.WatchStatusResponse {
	t.Helper()
	for {
		item := w.held(t)
		if item.Kind != campaignv1.WatchStatusResponse_KIND_HEARTBEAT {
			return item
		}
		w.release()
	}
}

func (w *watcher) nextChange(t *testing.T) *campaignv1.WatchStatusResponse {
	t.Helper()
	item := w.heldChange(t)
	w.release()
	return item
}

func (w *watcher) nothingButHeartbeats(t *testing.T, wait time.Duration) {
	t.Helper()
	until := time.After(wait)
	for {
		select {
		case item := <-w.items:
			if item.Kind != campaignv1.WatchStatusResponse_KIND_HEARTBEAT {
				t.Fatalf("expected only heartbeats, got %v", item)
			}
			w.release()
		case err := <-w.done:
			t.Fatalf("the watch ended: %v", err)
		case <-until:
			return
		}
	}
}

// recordingClient records the WatchStatus calls made through it.
type recordingClient struct {
	campaignv1.CampaignServiceClient
	mu      sync.Mutex
	watches []*campaignv1.WatchStatusRequest
}

func (c *recordingClient) WatchStatus(ctx context.Context, in *campaignv1.WatchStatusRequest,
	opts ...grpc.CallOption) (campaignv1.CampaignService_WatchStatusClient, error) {
	c.mu.Lock()
	c.watches = append(c.watches, proto.Clone(in).(*campaignv1.WatchStatusRequest))
	c.mu.Unlock()
	return c.CampaignServiceClient.WatchStatus(ctx, in, opts...)
}

func (c *recordingClient) watchCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.watches)
}

func (c *recordingClient) lastWatch() *campaignv1.WatchStatusRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.watches[len(c.watches)-1]
}

func waitFor(t *testing.T, within time.Duration, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
