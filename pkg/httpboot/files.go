package httpboot

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"syscall"
)

// serveFile serves one configured file from the files directory. It opens
// the file through an os.Root, so neither "..", an absolute path nor a
// symlink can lead outside the directory. http.ServeContent answers Range
// and If-None-Match; given an *os.File it sends with sendfile.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, key, name string) {
	serveFrom(w, r, s.files, s.log, key, name)
}

func serveFrom(w http.ResponseWriter, r *http.Request, root *os.Root, log *slog.Logger, key, name string) {
	f, err := root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			log.Error("boot file is missing", "key", key, "file", name)
			httpError(w, http.StatusNotFound, fmt.Sprintf("%s (%s) is not in the files directory", key, name))
			return
		}
		log.Error("cannot open boot file", "key", key, "file", name, "err", err)
		httpError(w, http.StatusForbidden, fmt.Sprintf("%s (%s) cannot be opened from the files directory", key, name))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		httpError(w, http.StatusNotFound, fmt.Sprintf("%s (%s) is not a regular file", key, name))
		return
	}
	w.Header().Set("ETag", etag(st))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-cache") // revalidate: an operator may swap the image
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// etag changes whenever the file is replaced or rewritten, without reading
// it: inode, size and modification time.
func etag(st os.FileInfo) string {
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, st.Size(), st.ModTime().UnixNano())
}
