// Command upstream serves a directory over HTTP as an artifact's upstream
// would (a Flatcar release directory, say), for the end-to-end tests and
// bench/artifacts.sh; package internal/upstream says what it does. It
// logs one line per request to stdout:
//
//	GET "/big.img" range="bytes=1048576-" status=206 sent=208666624 full=false
//
// and, once it listens, one line to stderr:
//
//	upstream: serving DIR on ADDR (rate N bytes/s per connection)
//
// GET /stats answers {path: {requests, full, bytes}}; POST /rate?bytes=N
// changes the rate. SIGINT or SIGTERM stops it. Run it in the upstream's
// network namespace:
//
//	ip netns exec up upstream -dir /srv/release -listen 10.99.0.9:8080 -rate 20000000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mayu-boot/mayu/internal/upstream"
)

type options struct {
	dir    string
	listen string
	rate   int64
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dir, "dir", "", "directory to serve (required)")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address:port to listen on (port 0: any free one, printed)")
	fs.Int64Var(&o.rate, "rate", 0, "bytes/s per connection; 0: unlimited")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case o.dir == "":
		return o, errors.New("-dir is required")
	case o.rate < 0:
		return o, errors.New("-rate must not be negative")
	}
	if fi, err := os.Stat(o.dir); err != nil || !fi.IsDir() {
		return o, fmt.Errorf("-dir %s is not a directory", o.dir)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends.
func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	srv, err := upstream.New(upstream.Config{Dir: o.dir, Rate: o.rate, Log: stdout})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "upstream: serving %s on %s (rate %d bytes/s per connection)\n", o.dir, ln.Addr(), o.rate)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		// Transfers in flight are cut, as a stopped web server cuts them.
		hs.Close()
		<-errc
		return nil
	}
}
