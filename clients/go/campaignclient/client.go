// Package campaignclient holds what a Go program needs beside the generated package
// campaignv1 (github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1) to call
// campaign.v1: Dial, a connection with the service's retry policy; DetailsOf, the google.rpc
// details of an error; Watch, a WatchStatus that resumes after the last revision it handled;
// and the dialer kit (NewDialer), which dials the campaigns whose leases a process holds.
//
// Dial gives the connection service_config.json, made from the contract, as its default
// service config: the channel retries the calls that are safe to repeat after UNAVAILABLE.
// grpc-go retries by default from v1.41 on; an older one (Debian 12's v1.33 among them)
// retries only in a process started with GRPC_GO_RETRY=on in its environment.
package campaignclient

import (
	"context"
	_ "embed" // service_config.json

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// serviceConfig is written by `python -m campaign_grpc.service_config`, never by hand.
//
//go:embed service_config.json
var serviceConfig string

// ServiceConfig is the gRPC service config of campaign.v1.CampaignService, the retry policy
// of the calls safe to repeat, for a connection made without Dial:
// grpc.WithDefaultServiceConfig(campaignclient.ServiceConfig()).
func ServiceConfig() string { return serviceConfig }

// Dial connects to the service at target with ServiceConfig as the default service config,
// then opts: grpc.WithInsecure() on loopback, elsewhere
// grpc.WithTransportCredentials(credentials.NewTLS(...)), and WithToken.
func Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	defaults := []grpc.DialOption{grpc.WithDefaultServiceConfig(serviceConfig)}
	return grpc.Dial(target, append(defaults, opts...)...)
}

// WithToken sends "authorization: Bearer <token>" with every call of the connection.
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearerToken(token))
}

type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity is false so that the token also goes to a loopback server without
// TLS.
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
