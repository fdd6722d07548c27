package election_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/election"
)

// The leadership metrics move on the registry the election was given.
func TestMetricsOnTheGivenRegistry(t *testing.T) {
	cli := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	el := election.New(cli, etcdtest.Prefix(t), "r1", 2*time.Second, logger(t), reg)
	value := func(name string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Error(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				m := mf.GetMetric()[0]
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
		return -1 // not exported
	}
	if got := value("mayu_leader_changes_total"); got != 0 {
		t.Errorf("before the campaign: mayu_leader_changes_total = %v, want 0", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	led := make(chan [2]float64, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		el.Run(ctx, func(ctx context.Context, f election.Fence) {
			led <- [2]float64{value("mayu_leader"), value("mayu_leader_changes_total")}
			cancel()
			<-ctx.Done()
		})
	}()
	select {
	case got := <-led:
		if got != [2]float64{1, 1} {
			t.Errorf("leading: mayu_leader, mayu_leader_changes_total = %v, want [1 1]", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("never led")
	}
	<-done
	if l, c := value("mayu_leader"), value("mayu_leader_changes_total"); l != 0 || c != 2 {
		t.Errorf("after resigning: mayu_leader %v, mayu_leader_changes_total %v, want 0 and 2", l, c)
	}
}
