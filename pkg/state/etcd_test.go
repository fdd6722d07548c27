package state

import (
	"context"
	"errors"
	"testing"
)

// An etcd error reads as one sentence, and is still both what etcd said and
// ErrUnavailable; a caller going away is not etcd failing.
func TestUnavailable(t *testing.T) {
	err := Unavailable("read the replicas", context.DeadlineExceeded)
	if got, want := err.Error(), "etcd read the replicas: context deadline exceeded (is etcd reachable?)"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v lost what it wraps", err)
	}
	if err := Unavailable("x", context.Canceled); err != context.Canceled {
		t.Errorf("canceled became %v", err)
	}
	if Unavailable("x", nil) != nil {
		t.Error("nil became an error")
	}
}

// Retry stops at the first success, reports each failure, and gives up
// when its context ends.
func TestRetry(t *testing.T) {
	n, failures := 0, 0
	err := Retry(context.Background(), 0, func(error) { failures++ }, func(context.Context) error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 || failures != 2 {
		t.Fatalf("err %v after %d calls, %d failures", err, n, failures)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Retry(ctx, 0, nil, func(context.Context) error { return errors.New("never") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("ended context: %v", err)
	}
}
