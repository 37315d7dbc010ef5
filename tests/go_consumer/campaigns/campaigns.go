// Package campaigns is one package of the program that imports the module: it creates and
// reads campaigns.
package campaigns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
)

// Create creates a campaign of customer, once however often the call is retried.
func Create(client campaignv1.CampaignServiceClient, customer, name string) (*campaignv1.Campaign, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	created, err := client.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{
		Campaign:  &campaignv1.Campaign{CustomerId: customer, Type: campaignv1.Campaign_TYPE_CALL, Name: name},
		RequestId: NewID(),
	})
	if err != nil {
		return nil, err
	}
	return created.Campaign, nil
}

// Get reads a campaign; the details of its error, if any.
func Get(client campaignv1.CampaignServiceClient, customer, id string) campaignclient.Details {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.GetCampaign(ctx, &campaignv1.GetCampaignRequest{CustomerId: customer, Id: id})
	return campaignclient.DetailsOf(err)
}

// NewID is a random (version 4) UUID.
func NewID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
