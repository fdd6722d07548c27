package httpboot

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/mayu-boot/mayu/pkg/digest"
)

// serveFile serves one configured file from the files directory. It opens
// the file through an os.Root, so neither "..", an absolute path nor a
// symlink can lead outside the directory. http.ServeContent answers Range
// and If-None-Match; given an *os.File it sends with sendfile.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, key, name string) {
	d, ok := s.digests[key]
	s.serveFrom(w, r, s.files, key, name, d, ok)
}

// serveFrom serves name from root. A file hashed at start (hashed) is
// sent with its digest as ETag, the same on every replica for the same
// bytes, and only while it is still the file that was hashed: one
// replaced or rewritten since would go out under a digest that is not
// its own, so it is refused (503) until the replica is restarted. A file
// not hashed at start (an extra file in the boot-files directory) gets an
// ETag of its inode, size and modification time.
func (s *Server) serveFrom(w http.ResponseWriter, r *http.Request, root *os.Root, key, name string, d digest.File, hashed bool) {
	f, err := root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.log.Error("boot file is missing", "key", key, "file", name)
			httpError(w, http.StatusNotFound, fmt.Sprintf("%s (%s) is not in the files directory", key, name))
			return
		}
		s.log.Error("cannot open boot file", "key", key, "file", name, "err", err)
		httpError(w, http.StatusForbidden, fmt.Sprintf("%s (%s) cannot be opened from the files directory", key, name))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		httpError(w, http.StatusNotFound, fmt.Sprintf("%s (%s) is not a regular file", key, name))
		return
	}
	tag := inodeETag(st)
	if hashed {
		if d.Changed(st) {
			s.metrics.fileChanged.WithLabelValues(key).Inc()
			s.log.Error("boot file changed on disk since this replica hashed it at start: refused until mayu is restarted here (or the file is put back)",
				"key", key, "file", name, "sha256_at_start", d.SHA256, "size_at_start", d.Size, "size", st.Size(),
				"mtime_at_start", d.ModTime, "mtime", st.ModTime())
			w.Header().Set("Retry-After", "30")
			httpError(w, http.StatusServiceUnavailable, fmt.Sprintf("%s (%s) changed on disk after this replica hashed it (sha256 %s): it is not served until mayu is restarted on this replica", key, name, d.SHA256[:12]))
			return
		}
		tag = d.ETag()
	}
	w.Header().Set("ETag", tag)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-cache") // revalidate: an operator may swap the image
	modified := st.ModTime()
	if hashed {
		// The digest says it all, and the same on every replica; the
		// file's time would differ between replicas.
		modified = time.Time{}
	}
	http.ServeContent(w, r, "", modified, f)
}

// inodeETag changes whenever the file is replaced or rewritten, without
// reading it: inode, size and modification time.
func inodeETag(st os.FileInfo) string {
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, st.Size(), st.ModTime().UnixNano())
}
