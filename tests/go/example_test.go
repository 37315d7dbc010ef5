package campaignclient_test

// The examples that docs/clients/go.md and docs/dialer.md quote, run (and their output
// checked) by go test.

import (
	"context"
	"fmt"
	"log"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
)

func Example() {
	address, token, customer := shared.address, dialerToken, newID()

	conn, err := campaignclient.Dial(address,
		grpc.WithInsecure(), // loopback; elsewhere grpc.WithTransportCredentials(credentials.NewTLS(...))
		campaignclient.WithToken(token))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := campaignv1.NewCampaignServiceClient(conn)

	// Every call gets a deadline of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	created, err := client.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{
		Campaign: &campaignv1.Campaign{
			CustomerId: customer, Type: campaignv1.Campaign_TYPE_CALL, Name: "spring promo",
		},
		RequestId: newID(), // the same on a retry: the retry cannot create a second campaign
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = client.UpdateCampaignStatus(ctx, &campaignv1.UpdateCampaignStatusRequest{
		CustomerId: customer, Id: created.Campaign.Id, Status: campaignv1.Campaign_STATUS_RUN,
	})
	details := campaignclient.DetailsOf(err)
	fmt.Println(details.Code, details.Reason())
	for _, violation := range details.Precondition.Violations {
		fmt.Println(violation.Type, violation.Subject)
	}
	// Output:
	// FailedPrecondition RUN_CONDITIONS_UNMET
	// OUTPLAN_MISSING outplan_id
	// OUTDIAL_MISSING outdial_id
	// NOTHING_TO_RUN actions
}

func ExampleWatch() {
	customer, conn := newID(), exampleConn()
	defer conn.Close()
	client := campaignv1.NewCampaignServiceClient(conn)
	stopped := exampleStopping(client, customer)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// The dialer: it follows the campaigns and, once a stopping campaign's calls are
	// drained, confirms that stop.
	request := &campaignv1.WatchStatusRequest{CustomerId: customer}
	err := campaignclient.Watch(ctx, client, request, func(item *campaignv1.WatchStatusResponse) error {
		if item.Reason == campaignv1.WatchStatusResponse_REASON_DRAINED {
			fmt.Println(item.CampaignId == stopped.Id, item.PreviousStatus, "->", item.Status)
			stop()
		}
		if item.Status != campaignv1.Campaign_STATUS_STOPPING {
			return nil
		}
		// ... the campaign's calls hang up, then:
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := client.ConfirmDrained(ctx, &campaignv1.ConfirmDrainedRequest{
			CustomerId: item.CustomerId, Id: item.CampaignId, StopRevision: item.StopRevision,
		})
		return err
	})
	fmt.Println(err)
	// Output:
	// true STATUS_STOPPING -> STATUS_STOP
	// context canceled
}

func ExampleDialer() {
	customer, conn := newID(), exampleConn()
	defer conn.Close()
	client := campaignv1.NewCampaignServiceClient(conn)
	running := exampleCampaign(client, customer, campaignv1.Campaign_STATUS_RUN)
	dialed := make(chan string, 100)

	// One Dialer per dialer process: the server spreads the running campaigns over them.
	dialer := campaignclient.NewDialer(campaignclient.DialerConfig{
		Client:     client,
		CustomerID: customer, // "" for every customer's campaigns
		Capacity:   50,       // how many campaigns this process dials at once at most
		Dial: func(ctx context.Context, campaign *campaignv1.Campaign) error {
			// Start calling the campaign's outdial list, or keep on (called again on every
			// change of the campaign).
			dialed <- campaign.Id
			return nil
		},
		Drain: func(ctx context.Context, campaignID string) error {
			// Start no more calls of the campaign; return once those in progress hung up.
			return nil
		},
	})
	go dialer.Run(context.Background())
	fmt.Println(<-dialed == running.Id)

	// At shutdown: drain every campaign, hand the leases back, leave.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fmt.Println(dialer.Close(ctx))
	// Output:
	// true
	// <nil>
}

func exampleConn() *grpc.ClientConn {
	conn, err := campaignclient.Dial(shared.address, grpc.WithInsecure(), campaignclient.WithToken(dialerToken))
	if err != nil {
		log.Fatal(err)
	}
	return conn
}

// exampleStopping is a campaign of customer that is stopping: run, then asked to stop.
func exampleStopping(client campaignv1.CampaignServiceClient, customer string) *campaignv1.Campaign {
	return exampleCampaign(client, customer, campaignv1.Campaign_STATUS_RUN, campaignv1.Campaign_STATUS_STOP)
}

// exampleCampaign is a new campaign of customer, set to each of statuses in turn.
func exampleCampaign(client campaignv1.CampaignServiceClient, customer string,
	statuses ...campaignv1.Campaign_Status) *campaignv1.Campaign {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &campaignv1.Campaign{
		CustomerId: customer, Type: campaignv1.Campaign_TYPE_CALL,
		OutplanId: newID(), OutdialId: newID(), QueueId: newID(),
	}
	created, err := client.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Campaign: c, RequestId: newID()})
	if err != nil {
		log.Fatal(err)
	}
	for _, status := range statuses {
		_, err := client.UpdateCampaignStatus(ctx, &campaignv1.UpdateCampaignStatusRequest{
			CustomerId: customer, Id: created.Campaign.Id, Status: status,
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	return created.Campaign
}
