package digest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOfAndChanged(t *testing.T) {
	dir := t.TempDir()
	data := []byte(strings.Repeat("image", 300_000))
	os.WriteFile(filepath.Join(dir, "image.raw"), data, 0o644)
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	d, err := Of(root, "cluster.install.image", "image.raw")
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if d.SHA256 != hex.EncodeToString(want[:]) || d.Size != int64(len(data)) || d.Key != "cluster.install.image" {
		t.Fatalf("got %+v", d)
	}
	if d.ETag() != `"sha256:`+d.SHA256+`"` {
		t.Fatalf("ETag %s", d.ETag())
	}
	st, _ := os.Stat(filepath.Join(dir, "image.raw"))
	if d.Changed(st) {
		t.Fatal("an unchanged file counts as changed")
	}
	// Rewritten in place with the same size, a second later.
	later := st.ModTime().Add(time.Second)
	os.Chtimes(filepath.Join(dir, "image.raw"), later, later)
	if st, _ = os.Stat(filepath.Join(dir, "image.raw")); !d.Changed(st) {
		t.Fatal("a file with another modification time does not count as changed")
	}
	// Replaced by another file with the same size and time.
	os.WriteFile(filepath.Join(dir, "new"), data, 0o644)
	os.Chtimes(filepath.Join(dir, "new"), d.ModTime, d.ModTime)
	os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "image.raw"))
	if st, _ = os.Stat(filepath.Join(dir, "image.raw")); !d.Changed(st) {
		t.Fatal("a replaced file does not count as changed")
	}

	for name, err := range map[string]error{
		"missing":   func() error { _, err := Of(root, "cluster.install.kernel", "nope"); return err }(),
		"outside":   func() error { _, err := Of(root, "cluster.install.kernel", "../../etc/passwd"); return err }(),
		"directory": func() error { _, err := Of(root, "cluster.install.kernel", "."); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "cluster.install.kernel") {
			t.Errorf("%s: %v, want an error naming the key", name, err)
		}
	}
	if got := (Set{"a": d}).Digests(); got["a"] != d.SHA256 {
		t.Fatalf("Digests %v", got)
	}
	if _, ok := (Set{"cluster.boot.bios": {Key: "cluster.boot.bios", Name: "undionly.kpxe"}}).Named("undionly.kpxe", "cluster.boot.efi64", "cluster.boot.bios"); !ok {
		t.Fatal("Named does not find it")
	}
}
