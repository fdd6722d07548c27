package etcd_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
)

// syncBuffer is a log sink that goroutines may write while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitLog(t *testing.T, b *syncBuffer, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log within %s:\n%s", want, within, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// When etcd loses its quorum the log says so once, and when it answers
// again one line says that, with how long it was gone.
func TestOutageLogged(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{})
	var logs syncBuffer
	conn, err := etcd.Open(context.Background(), node(config.Etcd{Endpoints: c.Endpoints}), slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(2 * time.Second)
	if strings.Contains(logs.String(), "etcd does not answer") {
		t.Fatalf("outage logged with every member up:\n%s", logs.String())
	}
	c.Freeze(1)
	c.Freeze(2)
	waitLog(t, &logs, "etcd does not answer", 10*time.Second)
	c.Thaw(1)
	c.Thaw(2)
	waitLog(t, &logs, "etcd answers again", 20*time.Second)
	if n := strings.Count(logs.String(), "etcd does not answer"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, logs.String())
	}
}

// The embedded etcd writes through mayu's log, in its format, and a clean
// stop writes no error and no stack trace.
func TestEmbeddedLogsThroughSlog(t *testing.T) {
	var logs syncBuffer
	n := node(config.Etcd{Embedded: config.Embedded{ClientURL: "http://" + freeAddr(t), PeerURL: "http://" + freeAddr(t),
		QuotaBytes: 64 << 20, CompactionRetention: time.Hour}})
	n.DataDir = t.TempDir()
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	conn, err := etcd.Open(context.Background(), n, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Client.Put(context.Background(), "/mayu/x", "y"); err != nil {
		t.Fatal(err)
	}
	started := len(logs.String())
	conn.Close()
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !strings.HasPrefix(line, "{") {
			t.Errorf("a line not in mayu's JSON format: %s", line)
		}
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "stacktrace") || strings.Contains(line, "goroutine") {
			t.Errorf("a clean start and stop logged: %s", line)
		}
	}
	// etcd warns at start about its own defaults; at a clean stop, nothing.
	if stop := logs.String()[started:]; strings.Contains(stop, `"level":"WARN"`) {
		t.Errorf("a clean stop logged warnings:\n%s", stop)
	}
	if !strings.Contains(logs.String(), "embedded etcd started") {
		t.Errorf("no start line:\n%s", logs.String())
	}
}
