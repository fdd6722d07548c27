package artifact

import (
	"context"
	"net/http"
)

// Download fetches url into p, resuming from p.Size() with an HTTP Range
// request, and again after a broken connection (up to attempts tries in
// all, with a short backoff; a 200 answer to a Range request starts over).
// header is added to every request (a peer's authentication). progress,
// when not nil, is called with the bytes held and the total (0 when
// unknown) at most every ~500 ms and at the end. Before any byte is
// written, the expected total (Content-Length or Content-Range) is
// checked with fits (ErrNoSpace from Cache.Fits). It returns once the
// server has sent the whole file; the caller commits.
func Download(ctx context.Context, client *http.Client, url string, header http.Header, p *Partial, attempts int,
	fits func(total int64) error, progress func(bytes, total int64)) error {
	panic("skeleton")
}

// Get fetches a small file (a DIGESTS.asc, a .sig) whole, at most limit bytes.
func Get(ctx context.Context, client *http.Client, url string, limit int64) ([]byte, error) {
	panic("skeleton")
}
