// Command dialerprocess is a dialer process of the Go kit for the fault harness
// (tests/e2e/test_dialers_harness_e2e.py): it dials nothing and writes what it would do as JSON
// lines, with the wall clock's time in seconds, as the Python dialer processes do.
//
//	dialerprocess TARGET HOLDER LOG
//
// SIGTERM stops it gracefully: it drains, lets go of its leases and leaves.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	campaignv1 "github.com/campaign-grpc/campaign-grpc/clients/go/campaign/v1"
	"github.com/campaign-grpc/campaign-grpc/clients/go/campaignclient"
	"google.golang.org/grpc"
)

type journal struct {
	mu      sync.Mutex
	out     *os.File
	dialing map[string]bool
}

func (j *journal) write(event, campaignID string, token int64) {
	line := map[string]interface{}{
		"t":     float64(time.Now().UnixNano()) / 1e9,
		"event": event,
	}
	if campaignID != "" {
		line["campaign"] = campaignID
	}
	if event == "dial" {
		line["token"] = token
	}
	data, _ := json.Marshal(line)
	j.out.Write(append(data, '\n'))
}

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: dialerprocess TARGET HOLDER LOG")
	}
	target, holder, logPath := os.Args[1], os.Args[2], os.Args[3]
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := campaignclient.Dial(target, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	j := &journal{out: out, dialing: map[string]bool{}}
	var dialer *campaignclient.Dialer
	dialer = campaignclient.NewDialer(campaignclient.DialerConfig{
		Client:   campaignv1.NewCampaignServiceClient(conn),
		Holder:   holder,
		Capacity: 100,
		Dial: func(ctx context.Context, c *campaignv1.Campaign) error {
			j.mu.Lock()
			defer j.mu.Unlock()
			if !j.dialing[c.Id] {
				j.dialing[c.Id] = true
				j.write("dial", c.Id, dialer.Leases()[c.Id])
			}
			return nil
		},
		Drain: func(ctx context.Context, id string) error {
			j.mu.Lock()
			defer j.mu.Unlock()
			if j.dialing[id] {
				delete(j.dialing, id)
				j.write("drain", id, 0)
			}
			return nil
		},
	})
	terminated := make(chan os.Signal, 1)
	signal.Notify(terminated, syscall.SIGTERM)
	go func() {
		<-terminated
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dialer.Close(ctx)
	}()
	if err := dialer.Run(context.Background()); err != nil {
		log.Print(err)
	}
	j.write("left", "", 0)
}
