package render

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

// installerRun is one run of the shipped first stage against a fake mayu.
type installerRun struct {
	disk   []byte   // what ended on the "disk"
	posts  []string // "installed" or "failed: <reason>", in order
	output string   // the script's output
	err    error
}

// runFirstStage renders the shipped first-stage script with the image
// digest want, and runs it under busybox sh (with busybox's wget, or
// curl) against an HTTP server that serves image, a plain file standing
// for the disk. first says what happens to the first image download:
// "cut" (in half: the replica died), "redirect" (307 to a peer's copy, as
// a replica that lacks an artifact answers), or "" (nothing).
// Only what a test cannot do is replaced: mount, umount, partprobe,
// blockdev and reboot are stubs, and the script's /tmp and /mnt paths
// point into the test's directory.
func runFirstStage(t *testing.T, image []byte, want string, useCurl bool, first, unpack string) installerRun {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox")
	}
	var mu sync.Mutex
	var run installerRun
	var imageGets int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/boot.ipxe":
			io.WriteString(w, "#!ipxe\n")
		case r.URL.Path == "/boot/image", r.URL.Path == "/peer/boot/image":
			mu.Lock()
			imageGets++
			cut := first == "cut" && imageGets == 1
			redirect := first == "redirect" && imageGets == 1
			mu.Unlock()
			if redirect {
				http.Redirect(w, r, "/peer/boot/image", http.StatusTemporaryRedirect)
				return
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(image)))
			if cut {
				w.Write(image[:len(image)/2])
				panic(http.ErrAbortHandler) // the replica died mid-download
			}
			w.Write(image)
		case strings.HasSuffix(r.URL.Path, "/final-config"):
			io.WriteString(w, "id: sample-serial\n")
		case strings.HasSuffix(r.URL.Path, "/installed"), strings.HasSuffix(r.URL.Path, "/failed"):
			if r.URL.Query().Get("token") != "tok" {
				http.Error(w, "no token", http.StatusForbidden)
				return
			}
			body, _ := io.ReadAll(r.Body)
			what := filepath.Base(r.URL.Path)
			if len(body) > 0 {
				what += ": " + string(body)
			}
			mu.Lock()
			run.posts = append(run.posts, what)
			mu.Unlock()
			io.WriteString(w, `{"state":"ok"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	for _, a := range []string{"sh", "wget", "sha256sum", "mkfifo", "tee", "cut", "cat", "rm", "grep", "wc", "sleep", "mkdir", "cp", "echo", "sync", "gzip"} {
		if err := os.Symlink(busybox, filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	if useCurl {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("no curl")
		}
		os.Symlink(curl, filepath.Join(bin, "curl"))
	}
	for _, stub := range []string{"mount", "umount", "partprobe", "blockdev", "reboot"} {
		os.WriteFile(filepath.Join(bin, stub), []byte("#!"+busybox+" sh\necho "+stub+" \"$@\" >>"+dir+"/stubs.log\n"), 0o755)
	}
	disk := filepath.Join(dir, "disk")
	os.WriteFile(disk, nil, 0o644)

	files := fstest.MapFS{}
	data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", "first-stage.sh"))
	if err != nil {
		t.Fatal(err)
	}
	files["fs.sh"] = &fstest.MapFile{Data: data}
	files["final.yaml"] = &fstest.MapFile{Data: []byte("x")}
	cl := cluster()
	cl.Install.Disk = disk
	// The partition must be a block device for the script not to wait
	// for one; mount is a stub, so any will do.
	cl.TemplateVars = map[string]string{"config_partition": blockDevice()}
	if unpack != "" {
		cl.TemplateVars["image_decompress"] = unpack
	}
	r, err := New(files, cl)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Context(Sample(), "tok", srv.URL)
	c.Image = Image{SHA256: want, Size: int64(len(image))}
	script, err := r.FirstStage(c)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(script), "/mnt/mayu-root", filepath.Join(dir, "mnt"))
	s = strings.ReplaceAll(s, "/tmp/mayu-", dir+"/mayu-")
	path := filepath.Join(dir, "first-stage.sh")
	os.WriteFile(path, []byte(s), 0o755)

	cmd := exec.Command(busybox, "sh", path)
	cmd.Env = []string{"PATH=" + bin}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case run.err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the first stage still runs after 30 s:\n%s", out.String())
	}
	run.output = out.String()
	run.disk, _ = os.ReadFile(disk)
	mu.Lock()
	defer mu.Unlock()
	run.posts = append([]string(nil), run.posts...)
	return run
}

// blockDevice is some block device of this machine (for -b), or "" .
func blockDevice() string {
	entries, _ := os.ReadDir("/dev")
	for _, e := range entries {
		if e.Type()&os.ModeDevice != 0 && e.Type()&os.ModeCharDevice == 0 {
			return "/dev/" + e.Name()
		}
	}
	return ""
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// The shipped first stage computes the image's SHA-256 as it writes it to
// the disk: the right image is announced installed, a corrupt one is
// reported failed with both digests and never announced installed.
func TestFirstStageChecksTheImage(t *testing.T) {
	image := bytes.Repeat([]byte("mayu os image "), 100_000) // 1.4 MB
	corrupt := bytes.Clone(image)
	corrupt[len(corrupt)/3] ^= 1
	for _, tc := range []struct {
		name   string
		served []byte
		curl   bool
		first  string
	}{
		{"right image, wget", image, false, ""},
		{"right image, curl", image, true, ""},
		{"corrupt image, wget", corrupt, false, ""},
		{"corrupt image, curl", corrupt, true, ""},
		{"first download cut, wget", image, false, "cut"},
		{"sent to a peer, curl", image, true, "redirect"},
		{"sent to a peer, wget", image, false, "redirect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := runFirstStage(t, tc.served, sum(image), tc.curl, tc.first, "")
			if !bytes.Equal(run.disk, tc.served) {
				t.Errorf("the disk holds %d bytes, want the %d served", len(run.disk), len(tc.served))
			}
			if bytes.Equal(tc.served, image) {
				if run.err != nil || len(run.posts) != 1 || run.posts[0] != "installed" {
					t.Fatalf("right image: exit %v, posts %q\n%s", run.err, run.posts, run.output)
				}
				if !strings.Contains(run.output, "has sha256 "+sum(image)) {
					t.Errorf("the script does not say the digest it checked:\n%s", run.output)
				}
				return
			}
			want := "failed: image sha256 mismatch: got " + sum(corrupt) + " want " + sum(image)
			if run.err == nil || len(run.posts) != 1 || run.posts[0] != want {
				t.Fatalf("corrupt image: exit %v, posts %q, want only %q\n%s", run.err, run.posts, want, run.output)
			}
		})
	}
}

// An image served compressed (image_decompress) is unpacked onto the
// disk; its digest is the compressed file's. A corrupt one breaks the
// decompressor and still counts as a digest mismatch: reported failed at
// once (one replica), not retried as a disk error.
func TestFirstStageUnpacksTheImage(t *testing.T) {
	image := bytes.Repeat([]byte("mayu os image "), 100_000)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(image)
	zw.Close()
	packed := z.Bytes()
	run := runFirstStage(t, packed, sum(packed), false, "", "gzip")
	if run.err != nil || len(run.posts) != 1 || run.posts[0] != "installed" || !bytes.Equal(run.disk, image) {
		t.Fatalf("gzip image: exit %v, posts %q, disk %d bytes (want the %d unpacked)\n%s", run.err, run.posts, len(run.disk), len(image), run.output)
	}
	corrupt := bytes.Clone(packed)
	corrupt[len(corrupt)/2] ^= 0xff
	run = runFirstStage(t, corrupt, sum(packed), false, "", "gzip")
	want := "failed: image sha256 mismatch: got " + sum(corrupt) + " want " + sum(packed)
	if run.err == nil || len(run.posts) != 1 || run.posts[0] != want {
		t.Fatalf("corrupt gzip image: exit %v, posts %q, want only %q\n%s", run.err, run.posts, want, run.output)
	}
}
