package campaignclient_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The time to live of dialers' leases on the servers of these tests: short, so that a dialer
// that stops keeping alive is replaced within seconds.
const leaseTTL = 1500 * time.Millisecond

// The token the servers of these tests accept, for every customer ("*"), as the dialer's.
var dialerToken = randomHex(32)

// server is `campaign-grpc serve` in a child process, on a port and a database file of its
// own that stay the same across restarts.
type server struct {
	address  string
	dir      string
	leaseTTL time.Duration
	cmd      *exec.Cmd
	log      *os.File
}

func newServer(dir string) (*server, error) {
	return newServerTTL(dir, leaseTTL)
}

func newServerTTL(dir string, ttl time.Duration) (*server, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	address := listener.Addr().String()
	listener.Close()
	tokens := fmt.Sprintf("%x *\n", sha256.Sum256([]byte(dialerToken)))
	if err := os.WriteFile(filepath.Join(dir, "tokens.txt"), []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	s := &server{address: address, dir: dir, leaseTTL: ttl}
	return s, s.start()
}

// startServer starts a server for one test, stopped when the test ends.
func startServer(t *testing.T) *server {
	t.Helper()
	return startServerTTL(t, leaseTTL)
}

// startServerTTL starts a server whose dialers' leases live ttl.
func startServerTTL(t *testing.T, ttl time.Duration) *server {
	t.Helper()
	s, err := newServerTTL(t.TempDir(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() error {
	command := os.Getenv("CAMPAIGN_GRPC_COMMAND")
	if command == "" {
		return fmt.Errorf("set CAMPAIGN_GRPC_COMMAND to the campaign-grpc command (.venv/bin/campaign-grpc)")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	s.log = log
	s.cmd = exec.Command(command, "serve",
		"--listen", s.address,
		"--database-url", "sqlite:///"+filepath.Join(s.dir, "campaigns.db"),
		"--auth-tokens", filepath.Join(s.dir, "tokens.txt"),
		"--heartbeat-interval", "0.5",
		"--lease-ttl", fmt.Sprint(s.leaseTTL.Seconds()),
		"--log-level", "WARNING",
	)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// The server goes with this process if it dies before its clean-up runs.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	return s.waitServing()
}

func (s *server) waitServing() error {
	conn, err := grpc.Dial(s.address, grpc.WithInsecure())
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		answer, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && answer.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not SERVING within 30 s:\n%s", s.address, s.logText())
}

// terminate stops the server as an orchestrator does, with SIGTERM, and waits for its exit.
func (s *server) terminate(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the server exited with %v:\n%s", err, s.logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the server did not exit within 30 s of SIGTERM:\n%s", s.logText())
	}
	s.log.Close()
}

func (s *server) kill() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	s.log.Close()
}

func (s *server) logText() string {
	text, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(text)
}

// newID is a random (version 4) UUID.
func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
