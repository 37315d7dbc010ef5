// Package campaignclient is what a Go backend needs to call campaign.v1, and the code the
// README's Go section is taken from: a connection with a token, the google.rpc details of an
// error, and a watch that resumes after the last revision it handled; dialer.go adds the
// dialer kit.
package campaignclient

import (
	"context"
	"errors"
	"io"
	"time"

	campaignv1 "campaign-grpc/gen/go/campaign/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Dial connects to the service at address; every call on the connection carries the token.
func Dial(address, token string) (*grpc.ClientConn, error) {
	return grpc.Dial(address,
		grpc.WithInsecure(), // loopback; elsewhere grpc.WithTransportCredentials(credentials.NewTLS(...))
		grpc.WithPerRPCCredentials(bearerToken(token)),
	)
}

// bearerToken sends "authorization: Bearer <token>" with every call.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false so that the token also goes to a loopback server without
// TLS; make it true where every connection is TLS.
func (bearerToken) RequireTransportSecurity() bool { return false }

// Details are the google.rpc details of an error. The server puts an ErrorInfo in every error
// it sends; a status made by the client library or the transport (UNAVAILABLE when the server
// cannot be reached, DEADLINE_EXCEEDED of the client's own deadline, a request over the
// client's own size limit, CANCELED) carries none. No field is ever nil: a detail the status
// lacks is an empty message, so that Reason is "" and the lists and Metadata are empty.
type Details struct {
	Code         codes.Code
	Info         *errdetails.ErrorInfo           // every error the server sends: Reason, Domain, Metadata
	BadRequest   *errdetails.BadRequest          // INVALID_ARGUMENT: every bad field
	Precondition *errdetails.PreconditionFailure // FAILED_PRECONDITION: every unmet condition
	Quota        *errdetails.QuotaFailure        // RESOURCE_EXHAUSTED past a server limit
}

// Reason is the ErrorInfo's reason: "" for a status without details.
func (d Details) Reason() string { return d.Info.GetReason() }

// Metadata is the ErrorInfo's metadata: empty for a status without details.
func (d Details) Metadata() map[string]string { return d.Info.GetMetadata() }

// DetailsOf decodes the details of an error returned by a call.
func DetailsOf(err error) Details {
	st := status.Convert(err)
	details := Details{
		Code:         st.Code(),
		Info:         &errdetails.ErrorInfo{},
		BadRequest:   &errdetails.BadRequest{},
		Precondition: &errdetails.PreconditionFailure{},
		Quota:        &errdetails.QuotaFailure{},
	}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			details.Info = d
		case *errdetails.BadRequest:
			details.BadRequest = d
		case *errdetails.PreconditionFailure:
			details.Precondition = d
		case *errdetails.QuotaFailure:
			details.Quota = d
		}
	}
	return details
}

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
