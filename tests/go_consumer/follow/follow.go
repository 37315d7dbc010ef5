// Package follow is another package of the program that imports the module: it follows the
// campaigns' changes.
package follow

import (
	"context"
	"errors"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
)

var errDone = errors.New("done")

// Until watches the campaigns of customer after revision after up to the first message that
// done accepts; the messages, heartbeats aside, and the revision to resume after.
func Until(client campaignv1.CampaignServiceClient, customer string, after int64,
	done func(*campaignv1.WatchStatusResponse) bool) ([]*campaignv1.WatchStatusResponse, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen []*campaignv1.WatchStatusResponse
	request := &campaignv1.WatchStatusRequest{CustomerId: customer, AfterRevision: after}
	err := campaignclient.Watch(ctx, client, request, func(item *campaignv1.WatchStatusResponse) error {
		if item.Kind != campaignv1.WatchStatusResponse_KIND_HEARTBEAT {
			seen = append(seen, item)
		}
		after = item.Revision
		if done(item) {
			return errDone
		}
		return nil
	})
	if err != errDone {
		return nil, 0, err
	}
	return seen, after, nil
}
