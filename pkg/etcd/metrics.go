package etcd

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// interceptor times every unary etcd call (Range, Txn, Put, …) of one
// client, in metrics registered on reg (nil: nowhere). It goes into the
// client's gRPC dial options.
func interceptor(reg prometheus.Registerer) grpc.UnaryClientInterceptor {
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mayu", Subsystem: "etcd", Name: "request_duration_seconds",
		Help: "Latency of etcd requests made by this replica, by method.", Buckets: mayumetrics.Latency()}, []string{"method"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "etcd", Name: "request_errors_total",
		Help: "etcd requests that failed, by method."}, []string{"method"})
	// The methods mayu calls start at 0 errors, so that rate() sees the
	// first one (MayuEtcdErrors).
	for _, m := range []string{"Range", "Txn", "Put", "DeleteRange", "LeaseGrant", "LeaseRevoke"} {
		errs.WithLabelValues(m)
	}
	mayumetrics.MustRegister(reg, duration, errs)
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		name := method[strings.LastIndex(method, "/")+1:]
		duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if err != nil {
			errs.WithLabelValues(name).Inc()
		}
		return err
	}
}
