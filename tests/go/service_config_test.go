package campaignclient_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestServiceConfigRetries: a connection of campaignclient.Dial, whose default service config
// is service_config.json, retries UNAVAILABLE for the methods the file names, and only those,
// against a server of its own that answers each method UNAVAILABLE twice, then OK.
func TestServiceConfigRetries(t *testing.T) {
	// An older grpc-go (Debian's 1.33) retries only with GRPC_GO_RETRY=on, read when the
	// process starts: the test runs itself again with it.
	if os.Getenv("CAMPAIGN_GRPC_RETRY_CHILD") == "" {
		child := exec.Command(os.Args[0], "-test.run=^TestServiceConfigRetries$", "-test.count=1")
		child.Env = append(os.Environ(), "GRPC_GO_RETRY=on", "CAMPAIGN_GRPC_RETRY_CHILD=1")
		if output, err := child.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, output)
		}
		return
	}
	retried := []string{"GetCampaign", "ListCampaigns", "ListCampaignEvents", "UndeleteCampaign",
		"UpdateCampaignStatus", "ConfirmDrained", "ReportOutdialExhausted"}
	notRetried := []string{"CreateCampaign", "UpdateCampaign", "DeleteCampaign"}

	var mu sync.Mutex
	calls := map[string]int{}
	flaky := func(_ interface{}, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		name := method[strings.LastIndex(method, "/")+1:]
		mu.Lock()
		calls[name]++
		n := calls[name]
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
		t.Fatal(err)
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(flaky))
	go server.Serve(listener)
	defer server.Stop()

	conn, err := campaignclient.Dial(listener.Addr().String(), grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	invoke := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return conn.Invoke(ctx, "/campaign.v1.CampaignService/"+name, &emptypb.Empty{},
			&emptypb.Empty{})
	}
	for _, name := range retried {
		if err := invoke(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range notRetried {
		if err := invoke(name); status.Code(err) != codes.Unavailable {
			t.Errorf("%s: %v, want UNAVAILABLE", name, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range retried {
		if calls[name] != 3 {
			t.Errorf("%s: %d attempts, want 3", name, calls[name])
		}
	}
	for _, name := range notRetried {
		if calls[name] != 1 {
			t.Errorf("%s: %d attempts, want 1", name, calls[name])
		}
	}
}
