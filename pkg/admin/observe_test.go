package admin_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

func TestLeasesNameTheirMachine(t *testing.T) {
	e := startEtcd(t)
	ctx := context.Background()
	if _, _, err := e.reg.Register(ctx, registry.Registration{ID: "sn-1", MACs: []string{"52:54:00:00:00:01"}}); err != nil {
		t.Fatal(err)
	}
	p := "/mayu-test/leases/"
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano)
	e.etc.Put(ctx, p+"10.99.0.101", `{"ip":"10.99.0.101","mac":"52:54:00:00:00:01","expiry":"`+future+`","leader":"r1"}`)
	e.etc.Put(ctx, p+"10.99.0.100", `{"ip":"10.99.0.100","mac":"52:54:00:00:00:02","expiry":"2020-01-01T00:00:00Z","leader":"r2"}`)
	e.etc.Put(ctx, p+"10.99.0.102", `garbage`)
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	ls, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].IP.String() != "10.99.0.100" || !ls[0].Expired || ls[1].Machine != "sn-1" || ls[1].Expired || ls[1].Leader != "r1" {
		t.Fatalf("%+v", ls)
	}
}

func TestWatchFollowsStateChanges(t *testing.T) {
	e := start(t)
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events := make(chan api.Event, 16)
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, func(ev api.Event) { events <- ev }) }()
	// The handler subscribes after sending its headers: a change made
	// before would not be seen.
	for e.reg.(*testfakes.Machines).Watchers() == 0 {
		if ctx.Err() != nil {
			t.Fatal("the watch never subscribed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if _, _, err := e.reg.Register(ctx, registry.Registration{ID: "sn-w", MACs: []string{"52:54:00:00:00:09"}}); err != nil {
		t.Fatal(err)
	}
	step := func(f func(*machine.Machine) error) {
		if _, err := e.reg.Update(ctx, "sn-w", f); err != nil {
			t.Fatal(err)
		}
	}
	step(func(m *machine.Machine) error { m.Metadata["k"] = "v"; return nil }) // not a state change
	step(func(m *machine.Machine) error { return m.StartInstall("r2", time.Now()) })
	step(func(m *machine.Machine) error { return m.MarkInstalled("r3", time.Now()) })
	if err := e.reg.Delete(ctx, "sn-w"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		select {
		case ev := <-events:
			got = append(got, string(ev.PrevState)+">"+string(ev.State)+"@"+ev.Replica+" deleted="+map[bool]string{true: "y", false: "n"}[ev.Deleted])
		case err := <-done:
			t.Fatalf("watch ended: %v (got %v)", err, got)
		case <-ctx.Done():
			t.Fatalf("got %v", got)
		}
	}
	want := []string{">configured@replica-a deleted=n", "configured>installing@r2 deleted=n", "installing>installed@r3 deleted=n", "installed>installed@ deleted=y"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events\n got %v\nwant %v", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch after cancel: %v", err)
	}
}

func TestDeletingAnInstalledMachineNeedsForce(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	if _, _, err := e.reg.Register(ctx, registry.Registration{ID: "sn-i"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r", time.Now()) },
	} {
		if _, err := e.reg.Update(ctx, "sn-i", f); err != nil {
			t.Fatal(err)
		}
	}
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	err := c.Delete(ctx, "sn-i", false)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(ae.Message, "--force") {
		t.Fatalf("delete without force: %v", err)
	}
	if err := c.Delete(ctx, "sn-i", true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Get(ctx, "sn-i"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("still there: %v", err)
	}
}
