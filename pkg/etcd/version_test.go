package etcd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"3.5.8", true},
		{"3.5.7", false},
		{"3.5.10", true}, // numbers, not strings: "10" < "8" as text
		{"3.4.30", false},
		{"3.6.0", true},
		{"3.6.0-rc.1", true},
		{"v3.5.9", true},
		{"4.0.0", true},
		{"2.3.8", false},
	} {
		got, err := atLeast(c.v, MinVersion)
		if err != nil || got != c.want {
			t.Errorf("atLeast(%q, %s) = %v, %v; want %v", c.v, MinVersion, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "3.5", "3.5.x", "three"} {
		if _, err := atLeast(bad, MinVersion); err == nil {
			t.Errorf("atLeast(%q) read a version", bad)
		}
	}
}

// A member older than MinVersion refuses the start, naming its endpoint
// and version; a member that does not answer is left out.
func TestCheckVersionsRefusesAnOldMember(t *testing.T) {
	versions := map[string]string{"http://a:2379": "3.6.4", "http://b:2379": "3.5.7"}
	status := func(ctx context.Context, ep string) (string, error) {
		if v, ok := versions[ep]; ok {
			return v, nil
		}
		<-ctx.Done() // a member down: its dial waits out the timeout
		return "", errors.New("connection refused")
	}
	err := checkVersions(context.Background(), []string{"http://down:2379", "http://a:2379", "http://b:2379"}, status, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "http://b:2379 runs version 3.5.7, older than 3.5.8") {
		t.Fatalf("err = %v, want b's 3.5.7 named", err)
	}
	versions["http://b:2379"] = "3.5.8"
	if err := checkVersions(context.Background(), []string{"http://down:2379", "http://a:2379", "http://b:2379"}, status, 100*time.Millisecond); err != nil {
		t.Fatalf("new enough members refused: %v", err)
	}
	// Members down cost one timeout together, not one each.
	t0 := time.Now()
	if err := checkVersions(context.Background(), []string{"http://down1:2379", "http://down2:2379", "http://down3:2379", "http://a:2379"}, status, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 800*time.Millisecond {
		t.Errorf("three members down took %v to check, want about one timeout (300ms)", took)
	}
	versions["http://b:2379"] = "garbage"
	if err := checkVersions(context.Background(), []string{"http://b:2379"}, status, time.Second); err == nil || !strings.Contains(err.Error(), `"garbage"`) {
		t.Fatalf("err = %v, want the unreadable version named", err)
	}
}

// A member that is not among the endpoints is checked too: the member
// list names it. Each member is read once, whether its URL is written
// with a scheme or without; a member list that cannot be read leaves the
// endpoints checked.
func TestVersionTargetsAddTheOtherMembers(t *testing.T) {
	members := func(ctx context.Context) ([]string, error) {
		return []string{"http://a:2379", "http://b:2379", "https://c:2379"}, nil
	}
	got := versionTargets(context.Background(), []string{"a:2379"}, members, time.Second)
	if want := []string{"a:2379", "http://b:2379", "https://c:2379"}; !slices.Equal(got, want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	status := func(ctx context.Context, ep string) (string, error) {
		if ep == "http://b:2379" {
			return "3.5.7", nil
		}
		return "3.6.4", nil
	}
	err := checkVersions(context.Background(), got, status, time.Second)
	if err == nil || !strings.Contains(err.Error(), "http://b:2379 runs version 3.5.7") {
		t.Errorf("err = %v, want the unlisted member b named", err)
	}
	failing := func(ctx context.Context) ([]string, error) { return nil, errors.New("permission denied") }
	if got := versionTargets(context.Background(), []string{"a:2379"}, failing, time.Second); !slices.Equal(got, []string{"a:2379"}) {
		t.Errorf("targets %v without a member list, want the endpoints", got)
	}
}
