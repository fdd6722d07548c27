package httpboot_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/render"
)

// catalogue is a unit-test stand-in for artifact.Manager: records, the
// files this replica holds, and who else holds what.
type catalogue struct {
	records map[string]artifact.Record
	held    map[string]string // sha256 → path
	holders map[string][]artifact.Holder
}

func (c *catalogue) Lookup(name string) (artifact.Record, bool) {
	r, ok := c.records[name]
	return r, ok
}

func (c *catalogue) Open(sum string) (*os.File, error) {
	p, ok := c.held[sum]
	if !ok {
		return nil, os.ErrNotExist
	}
	return os.Open(p)
}

func (c *catalogue) Holders(sum string) []artifact.Holder { return c.holders[sum] }

func newArtifactServer(t *testing.T, cat *catalogue, cluster config.Cluster) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	boot := httpboot.New(httpboot.Options{Cluster: cluster, Artifacts: cat, Replica: "r1", MayuURL: "http://mayu",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: reg})
	srv := httptest.NewServer(boot.Handler())
	t.Cleanup(srv.Close)
	return srv, reg
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// The boot URLs serve the artifact the configuration names, from the
// cache, with its digest as ETag; a replica that lacks it sends the
// machine to a peer that holds it, or answers 503 with Retry-After; never
// other bytes.
func TestServeArtifact(t *testing.T) {
	dir := t.TempDir()
	image := []byte(strings.Repeat("flatcar image ", 1000))
	sum := sha256.Sum256(image)
	imgSum := hex.EncodeToString(sum[:])
	path := filepath.Join(dir, imgSum)
	if err := os.WriteFile(path, image, 0o444); err != nil {
		t.Fatal(err)
	}
	kernelSum := strings.Repeat("ab", 32)
	cat := &catalogue{
		records: map[string]artifact.Record{
			"img-1":     {Name: "img-1", SHA256: imgSum, Size: int64(len(image)), Status: artifact.Ready},
			"kernel-1":  {Name: "kernel-1", SHA256: kernelSum, Status: artifact.Ready},
			"pending-1": {Name: "pending-1", Status: artifact.Pending},
			"unheld-1":  {Name: "unheld-1", SHA256: strings.Repeat("cd", 32), Status: artifact.Ready},
			"other":     {Name: "other", SHA256: imgSum, Status: artifact.Ready},
		},
		held: map[string]string{imgSum: path},
		holders: map[string][]artifact.Holder{
			kernelSum:                {{Replica: "r1", PeerURL: "http://10.0.0.1:4081"}, {Replica: "r2", PeerURL: "http://10.0.0.2:4081"}},
			strings.Repeat("cd", 32): {{Replica: "r1", PeerURL: "http://10.0.0.1:4081"}},
		},
	}
	cluster := config.Cluster{
		Install: config.Install{Kernel: "artifact:kernel-1", Initrd: "artifact:pending-1", Image: "artifact:img-1"},
		Profiles: []config.Profile{
			{Name: "core", Quantity: 1, Install: config.ProfileInstall{Image: "artifact:unheld-1"}},
			{Name: "gone", Quantity: 1, Install: config.ProfileInstall{Image: "artifact:missing-1"}},
		},
	}
	srv, reg := newArtifactServer(t, cat, cluster)

	resp, body := get(t, srv.URL+"/boot/image")
	if resp.StatusCode != 200 || body != string(image) || resp.Header.Get("ETag") != `"sha256:`+imgSum+`"` {
		t.Fatalf("/boot/image: %d etag %q, %d bytes", resp.StatusCode, resp.Header.Get("ETag"), len(body))
	}
	if resp.Header.Get("Last-Modified") != "" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("/boot/image: Last-Modified %q (the same bytes must look the same on every replica), Cache-Control %q",
			resp.Header.Get("Last-Modified"), resp.Header.Get("Cache-Control"))
	}
	// Range and conditional requests work on the digest ETag.
	resp, body = get(t, srv.URL+"/boot/image", "Range", "bytes=0-6")
	if resp.StatusCode != http.StatusPartialContent || body != "flatcar" {
		t.Errorf("range: %d %q", resp.StatusCode, body)
	}
	resp, _ = get(t, srv.URL+"/boot/image", "If-None-Match", `"sha256:`+imgSum+`"`)
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}

	// Not held here, held by r2: redirected there (never to itself).
	resp, _ = get(t, srv.URL+"/boot/kernel?x=1")
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "http://10.0.0.2:4081/boot/kernel?x=1" {
		t.Errorf("/boot/kernel: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Not ready, held by nobody else, not in the catalogue: 503, Retry-After.
	for path, want := range map[string]string{
		"/boot/initrd":              "artifact pending-1 is pending",
		"/boot/artifacts/unheld-1":  "not held by any replica",
		"/boot/artifacts/missing-1": "not in the catalogue",
	} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, want) {
			t.Errorf("%s: %d %q, Retry-After %q", path, resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	// Only what the configuration names is served by name.
	if resp, _ := get(t, srv.URL+"/boot/artifacts/other"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/boot/artifacts/other (not in the configuration): %d", resp.StatusCode)
	}
	for outcome, want := range map[string]float64{"redirect": 1, "not_ready": 1, "not_held": 1, "not_catalog": 1} {
		if got := elsewhere(t, reg, outcome); got != want {
			t.Errorf("mayu_http_artifact_elsewhere_total{outcome=%q} = %v, want %v", outcome, got, want)
		}
	}
}

// elsewhere is mayu_http_artifact_elsewhere_total{outcome}.
func elsewhere(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mayu_http_artifact_elsewhere_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no mayu_http_artifact_elsewhere_total{outcome=%q}", outcome)
	return 0
}

// A profile's own OS: its machines' installer script and first stage
// point at the profile's artifacts, the others at cluster.install's.
func TestProfileOwnArtifacts(t *testing.T) {
	l := newLab(t, func(c *config.Cluster) {
		c.Profiles[0].Install = config.ProfileInstall{Kernel: "artifact:core-kernel", Image: "artifact:core-image"}
	})
	first := l.script("SERIAL-CORE", "", "52:54:00:00:00:31") // the first machine gets profile core
	if !strings.Contains(first, l.srv.URL+"/boot/artifacts/core-kernel ") || !strings.Contains(first, l.srv.URL+"/boot/initrd ") {
		t.Errorf("core's installer script:\n%s", first)
	}
	second := l.script("SERIAL-OTHER", "", "52:54:00:00:00:32")
	if !strings.Contains(second, l.srv.URL+"/boot/kernel ") {
		t.Errorf("default's installer script:\n%s", second)
	}
	// Its first stage waits until the image artifact is ready (this lab
	// has no catalogue): never a script that cannot check the image.
	fs, _ := installerURLs(t, first)
	code, body, hdr := l.do("GET", fs)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(body, "artifact:core-image") {
		t.Errorf("core's first stage without the image artifact: %d %q", code, body)
	}
	// Where the first stage fetches the image from: the profile's own.
	c := config.Cluster{Install: config.Install{Image: "images/os.img"},
		Profiles: []config.Profile{{Name: "core", Install: config.ProfileInstall{Image: "artifact:core-image"}}}}
	if got := render.BootURL("http://m", c, "core", "image"); got != "http://m/boot/artifacts/core-image" {
		t.Errorf("core's image URL: %s", got)
	}
	if got := render.BootURL("http://m", c, "default", "image"); got != "http://m/boot/image" {
		t.Errorf("default's image URL: %s", got)
	}
}
