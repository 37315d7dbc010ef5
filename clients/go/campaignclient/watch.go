package campaignclient

import (
	"context"
	"errors"
	"io"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Watch follows WatchStatus as req asks until ctx ends or handle fails, calling handle with
// every message in order. When the stream ends with UNAVAILABLE (a server shutting down or
// gone), RESOURCE_EXHAUSTED (fallen too far behind), or goes silent for three heartbeat
// intervals, it reconnects with the last revision handled as after_revision, and its timeline:
// handle sees every change once, across restarts of the server. Any other error is returned,
// such as OUT_OF_RANGE (the log no longer holds that revision: start again from a snapshot).
func Watch(ctx context.Context, client campaignv1.CampaignServiceClient,
	req *campaignv1.WatchStatusRequest, handle func(*campaignv1.WatchStatusResponse) error) error {
	return WatchStreams(ctx, client, req, nil, handle)
}

// WatchStreams is Watch that also calls resuming (unless nil) at the start and as soon as a
// stream ends, with the request of the next call: with after_revision 0 the stream starts
// with a snapshot, up to its KIND_SNAPSHOT_END; otherwise it replays the changes after that
// revision, up to the KIND_HEARTBEAT that says it has caught up.
func WatchStreams(ctx context.Context, client campaignv1.CampaignServiceClient,
	req *campaignv1.WatchStatusRequest, resuming func(*campaignv1.WatchStatusRequest),
	handle func(*campaignv1.WatchStatusResponse) error) error {
	resume := &campaignv1.WatchStatusRequest{
		CustomerId:    req.CustomerId,
		CampaignId:    req.CampaignId,
		AfterRevision: req.AfterRevision,
		View:          req.View,
		Timeline:      req.Timeline,
		IncludeLeases: req.IncludeLeases,
	}
	silence := 30 * time.Second // until the server says its heartbeat interval
	backoff := 100 * time.Millisecond
	if resuming != nil {
		resuming(resume)
	}
	for {
		handled, err := follow(ctx, client, resume, &silence, handle)
		if resuming != nil {
			resuming(resume)
		}
		var failed handlerError
		if errors.As(err, &failed) {
			return failed.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.ResourceExhausted, codes.Canceled: // Canceled: silent
		default:
			return err
		}
		if handled {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 5*time.Second {
			backoff = 5 * time.Second
		}
	}
}

type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// follow reads one stream until it fails, moving resume.AfterRevision past every message
// handled (and resume.Timeline to its timeline): every revision the stream sends is a resume
// point, snapshot items included.
func follow(ctx context.Context, client campaignv1.CampaignServiceClient,
	resume *campaignv1.WatchStatusRequest, silence *time.Duration,
	handle func(*campaignv1.WatchStatusResponse) error) (handled bool, err error) {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	quiet := time.AfterFunc(*silence, cancel)
	defer quiet.Stop()
	stream, err := client.WatchStatus(streamCtx, resume)
	if err != nil {
		return false, err
	}
	for {
		item, err := stream.Recv()
		if err == io.EOF { // the stream is not meant to end: call again
			return handled, status.Error(codes.Unavailable, "the server ended the stream")
		}
		if err != nil {
			return handled, err
		}
		quiet.Stop()
		if interval := item.GetHeartbeatInterval(); interval != nil {
			*silence = 3 * interval.AsDuration()
		}
		if err := handle(item); err != nil {
			return handled, handlerError{err}
		}
		handled = true
		resume.AfterRevision = item.Revision
		if item.Timeline != "" {
			resume.Timeline = item.Timeline
		}
		quiet.Reset(*silence)
	}
}
