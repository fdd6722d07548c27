package etcdtest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Ranges records the range reads a client sent: what a test asserts to
// show that a listing is paged.
type Ranges struct {
	mu    sync.Mutex
	reads []*pb.RangeRequest
}

// Under returns the range reads whose key starts with prefix.
func (r *Ranges) Under(prefix string) []*pb.RangeRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*pb.RangeRequest
	for _, q := range r.reads {
		if strings.HasPrefix(string(q.Key), prefix) {
			out = append(out, q)
		}
	}
	return out
}

// Reset forgets the reads recorded so far.
func (r *Ranges) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = nil
}

// RecordingClient is a second client to s that records every range read
// it sends.
func (s *Server) RecordingClient(t testing.TB) (*clientv3.Client, *Ranges) {
	t.Helper()
	rec := &Ranges{}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.ClientURL},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(
			func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				if q, ok := req.(*pb.RangeRequest); ok {
					rec.mu.Lock()
					rec.reads = append(rec.reads, q)
					rec.mu.Unlock()
				}
				return invoker(ctx, method, req, reply, cc, opts...)
			})},
	})
	if err != nil {
		t.Fatalf("etcdtest: client for %s: %v", s.ClientURL, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, rec
}
