package artifact

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/etcdtest"
)

// detachSign is e's detached signature of data, binary, as Flatcar's .sig.
func detachSign(t *testing.T, e *openpgp.Entity, data []byte) []byte {
	var buf bytes.Buffer
	if err := openpgp.DetachSign(&buf, e, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Flatcar's way: the clearsigned DIGESTS give a SHA-512, checked while
// streaming; the cache's SHA-256 is computed. A DIGESTS file signed by
// another key refuses the artifact before its bytes are downloaded; one
// that lists other bytes refuses them once downloaded, naming both
// digests. A detached signature is checked over the bytes. Nothing
// refused is stored.
func TestSignedUpstream(t *testing.T) {
	cli := etcdtest.Start(t)
	up := newOrigin(t, 1<<20)
	rel, other := newSigner(t, "Release"), newSigner(t, "Mallory")
	digests := func(file string, data []byte) string { return flatcarDigests(map[string][]byte{file: data}) }
	tampered := append([]byte{}, up.data...)
	tampered[4096] ^= 1
	base, fileGets := up.srv.URL+"/releases/", &up.full
	up.extra.Store(&map[string][]byte{
		"file.bin.DIGESTS.asc":    clearsignText(t, rel, digests("file.bin", up.data)),
		"other-key.DIGESTS.asc":   clearsignText(t, other, digests("file.bin", up.data)),
		"other-bytes.DIGESTS.asc": clearsignText(t, rel, digests("file.bin", tampered)),
		"file.bin.sig":            detachSign(t, rel, up.data),
		"other-key.sig":           detachSign(t, other, up.data),
	})
	rs := startReplicas(t, cli, 2)
	ctx := context.Background()
	add := func(name string, req AddRequest) Record {
		t.Helper()
		req.Name, req.URL, req.Keyring = name, base+"file.bin", string(publicKey(t, rel))
		if _, err := rs[0].m.Add(ctx, req, "alice"); err != nil {
			t.Fatal(err)
		}
		var got Record
		eventually(t, 20*time.Second, name+" verified or refused", func() bool {
			var ok bool
			got, ok = rs[1].m.Lookup(name)
			return ok && got.Status != Pending
		})
		t.Logf("%s: %s %s%s", name, got.Status, got.Verified, got.Error)
		return got
	}

	got := add("signed-digests", AddRequest{DigestsURL: base + "file.bin.DIGESTS.asc"})
	sum512 := sha512.Sum512(up.data)
	if got.Status != Ready || got.SHA256 != up.sha || got.Source.SHA512 != hex.EncodeToString(sum512[:]) || !strings.Contains(got.Verified, "file.bin.DIGESTS.asc signed by") {
		t.Fatalf("signed digests: %+v", got)
	}
	holdAll(t, rs, up.sha)
	if n := fileGets.Load(); n != 1 {
		t.Errorf("%d downloads, want 1", n)
	}

	got = add("signed-other-key", AddRequest{DigestsURL: base + "other-key.DIGESTS.asc"})
	if got.Status != Failed || !strings.Contains(got.Error, "other-key.DIGESTS.asc") {
		t.Errorf("digests signed by another key: %+v", got)
	}
	if n := fileGets.Load(); n != 1 {
		t.Errorf("the file was downloaded although its digests are not signed by the keyring (%d downloads)", n)
	}

	got = add("signed-other-bytes", AddRequest{DigestsURL: base + "other-bytes.DIGESTS.asc"})
	bad512 := sha512.Sum512(tampered)
	if got.Status != Failed || !strings.Contains(got.Error, "wrong digest") ||
		!strings.Contains(got.Error, hex.EncodeToString(bad512[:])) || !strings.Contains(got.Error, hex.EncodeToString(sum512[:])) {
		t.Errorf("digests of other bytes: %+v", got)
	}

	got = add("detached", AddRequest{SigURL: base + "file.bin.sig"})
	if got.Status != Ready || got.SHA256 != up.sha || !strings.Contains(got.Verified, "detached signature by") {
		t.Errorf("detached signature: %+v", got)
	}
	got = add("detached-other-key", AddRequest{SigURL: base + "other-key.sig"})
	if got.Status != Failed || !strings.Contains(got.Error, "bad signature") {
		t.Errorf("detached signature by another key: %+v", got)
	}

	var refused float64
	for _, r := range rs {
		for _, reason := range []string{refusedDigests, refusedSHA512, refusedSignature} {
			refused += testutil.ToFloat64(r.m.met.refused.WithLabelValues(reason))
		}
		// Only the verified bytes, under their digest; no partial left.
		eventually(t, 10*time.Second, r.name+" keeps only the verified bytes", func() bool {
			h := r.cache.Held()
			return len(h) == 1 && h[0] == up.sha && len(r.cache.Partials()) == 0
		})
	}
	if refused != 3 {
		t.Errorf("%v refusals counted, want 3", refused)
	}
}
