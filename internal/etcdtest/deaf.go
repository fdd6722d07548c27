package etcdtest

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// DeafWatches is a dial option under which, while deaf is set, the
// client's watches hear nothing (their answers wait until it is unset),
// while every other call goes through: a watch on an etcd member cut off,
// or one that etcd sends nothing yet.
func DeafWatches(deaf *atomic.Bool) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc,
		cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Watch/Watch" {
			return s, err
		}
		return deafStream{ClientStream: s, deaf: deaf}, nil
	})
}

type deafStream struct {
	grpc.ClientStream
	deaf *atomic.Bool
}

func (s deafStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	for s.deaf.Load() {
		time.Sleep(10 * time.Millisecond)
	}
	return err
}
