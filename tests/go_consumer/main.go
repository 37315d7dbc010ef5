// Command consumer calls a campaign.v1 server with the module's packages and prints what it
// saw as JSON, for tests/e2e/test_go_module.py to check:
//
//	consumer TARGET
//
// Its packages campaigns and follow each import the module, linked into this one binary.
package main

import (
	"context"
	"encoding/json"
	"log"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"example.com/consumer/campaigns"
	"example.com/consumer/follow"
	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

type item struct {
	Kind       string `json:"kind"`
	CampaignID string `json:"campaign_id"`
	Revision   int64  `json:"revision"`
}

type details struct {
	Code     string            `json:"code"`
	Reason   string            `json:"reason"`
	Metadata map[string]string `json:"metadata"`
}

type report struct {
	Version     string            `json:"version"`
	First       string            `json:"first"`
	Second      string            `json:"second"`
	Snapshot    []item            `json:"snapshot"`
	ResumeAfter int64             `json:"resume_after"`
	Resumed     []item            `json:"resumed"`
	NotFound    details           `json:"not_found"`
	Unavailable details           `json:"unavailable"`
	Attempts    map[string]int    `json:"attempts"`
	Retried     map[string]string `json:"retried"`
}

func items(messages []*campaignv1.WatchStatusResponse) []item {
	out := []item{}
	for _, m := range messages {
		out = append(out, item{Kind: m.Kind.String(), CampaignID: m.CampaignId, Revision: m.Revision})
	}
	return out
}

func detailsOf(err error) details {
	d := campaignclient.DetailsOf(err)
	// Info is never nil, with details or without.
	return details{Code: d.Code.String(), Reason: d.Info.Reason, Metadata: d.Metadata()}
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: consumer TARGET")
	}
	conn, err := campaignclient.Dial(os.Args[1], grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := campaignv1.NewCampaignServiceClient(conn)
	r := report{Version: campaignclient.Version}

	customer := campaigns.NewID()
	first, err := campaigns.Create(client, customer, "first")
	if err != nil {
		log.Fatal(err)
	}
	r.First = first.Id
	snapshot, after, err := follow.Until(client, customer, 0, func(m *campaignv1.WatchStatusResponse) bool {
		return m.Kind == campaignv1.WatchStatusResponse_KIND_SNAPSHOT_END
	})
	if err != nil {
		log.Fatal(err)
	}
	r.Snapshot, r.ResumeAfter = items(snapshot), after
	second, err := campaigns.Create(client, customer, "second")
	if err != nil {
		log.Fatal(err)
	}
	r.Second = second.Id
	resumed, _, err := follow.Until(client, customer, after, func(m *campaignv1.WatchStatusResponse) bool {
		return m.Kind == campaignv1.WatchStatusResponse_KIND_CHANGE
	})
	if err != nil {
		log.Fatal(err)
	}
	r.Resumed = items(resumed)

	notFound := campaigns.Get(client, customer, campaigns.NewID())
	r.NotFound = details{Code: notFound.Code.String(), Reason: notFound.Reason(), Metadata: notFound.Metadata()}
	r.Unavailable = detailsOf(callServerDown())
	r.Attempts, r.Retried = retries()

	out, _ := json.MarshalIndent(r, "", "  ")
	os.Stdout.Write(append(out, '\n'))
}

// callServerDown calls an address no server listens on: UNAVAILABLE, made by the client
// library, without details.
func callServerDown() error {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	address := listener.Addr().String()
	listener.Close()
	conn, err := campaignclient.Dial(address, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = campaignv1.NewCampaignServiceClient(conn).CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{})
	return err
}

// retries calls GetCampaign and CreateCampaign through Dial's connection on a server that
// answers every method UNAVAILABLE twice, then OK: the attempts it saw of each, and how each
// call ended.
func retries() (map[string]int, map[string]string) {
	var mu sync.Mutex
	attempts := map[string]int{}
	flaky := func(_ interface{}, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		name := method[strings.LastIndex(method, "/")+1:]
		mu.Lock()
		attempts[name]++
		n := attempts[name]
		mu.Unlock()
		if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
			return err
		}
		if n <= 2 {
			return status.Error(codes.Unavailable, "try again")
		}
		return stream.SendMsg(&emptypb.Empty{})
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(flaky))
	go server.Serve(listener)
	defer server.Stop()
	conn, err := campaignclient.Dial(listener.Addr().String(), grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := campaignv1.NewCampaignServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, getErr := client.GetCampaign(ctx, &campaignv1.GetCampaignRequest{})
	_, createErr := client.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{})
	mu.Lock()
	defer mu.Unlock()
	return attempts, map[string]string{
		"GetCampaign":    status.Code(getErr).String(),
		"CreateCampaign": status.Code(createErr).String(),
	}
}
