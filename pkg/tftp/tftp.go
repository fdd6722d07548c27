// Package tftp serves the iPXE binaries that PXE firmware fetches (boot
// step 2). Every replica serves them. It is read-only, rooted in the
// boot-files directory through an os.Root: no name leads outside it, not
// even through a symlink. blksize and tsize are negotiated (iPXE asks
// 1432, EDK2 1468 and probes tsize first).
package tftp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/hostile"
)

// Server is a read-only TFTP server.
type Server struct {
	root *os.Root
	srv  *tftp.Server
	log  *slog.Logger
	gate *gate

	metrics *metrics
}

// New serves the files of dir under limits (gate.go says how they are
// kept on the library). Its metrics go to reg (nil: nowhere).
func New(dir string, limits config.TFTPLimits, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("node.boot_files_dir: %w", err)
	}
	s := &Server{root: root, log: log, metrics: newMetrics(reg)}
	s.gate = newGate(limits, s.metrics)
	s.srv = tftp.NewServer(s.read, nil) // nil: writes are refused
	s.srv.SetTimeout(limits.Timeout)
	s.srv.SetRetries(limits.Retransmissions)
	// Send again as soon as the timeout passes: the library's default
	// waits up to another second at random, which would only stretch
	// what a request nobody acknowledges holds.
	s.srv.SetBackoff(func(int) time.Duration { return 0 })
	s.srv.SetHook(hook{log})
	return s, nil
}

// Serve answers on conn until Shutdown.
func (s *Server) Serve(conn net.PacketConn) error { return s.srv.Serve(conn) }

// Shutdown stops the server and closes the directory.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.root.Close()
}

// Name turns what a TFTP client asked for into a name inside the root, or
// refuses it. Clients send names with or without a leading slash.
func Name(requested string) (string, error) {
	name := strings.TrimLeft(requested, "/")
	if name == "" || strings.ContainsRune(name, 0) || strings.Contains(name, "\\") {
		return "", fmt.Errorf("bad file name %q", clip(requested))
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." || seg == "." || seg == "" {
			return "", fmt.Errorf("file name %q leaves the boot-files directory", clip(requested))
		}
	}
	return name, nil
}

func (s *Server) read(requested string, rf io.ReaderFrom) error {
	peer, addr := "", netip.Addr{}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ua := ot.RemoteAddr()
		peer = ua.String()
		addr = ua.AddrPort().Addr().Unmap()
	}
	claim, err := s.gate.enter(addr)
	if err != nil {
		s.log.Debug("tftp: refused", "file", clip(requested), "peer", peer, "err", err)
		return err
	}
	defer claim.leave()
	name, err := Name(requested)
	if err != nil {
		s.metrics.transfers.WithLabelValues("refused").Inc()
		s.log.Warn("tftp: refused", "file", clip(requested), "peer", peer, "err", err)
		return err
	}
	f, err := s.root.Open(name)
	if err != nil {
		s.log.Info("tftp: not served", "file", name, "peer", peer, "err", err)
		if errors.Is(err, fs.ErrNotExist) {
			s.metrics.transfers.WithLabelValues("not_found").Inc()
			return fmt.Errorf("file %q not found", name)
		}
		s.metrics.transfers.WithLabelValues("refused").Inc()
		return fmt.Errorf("file %q cannot be served", name)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		s.metrics.transfers.WithLabelValues("not_found").Inc()
		return fmt.Errorf("file %q not found", name)
	}
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(st.Size()) // tsize
	}
	// The sender reads one block (blksize, ~1.4 kB) at a time: buffered, a
	// transfer costs a read syscall per 64 kB instead of per block.
	n, err := rf.ReadFrom(&firstBlock{r: bufio.NewReaderSize(f, 64<<10), claim: claim})
	if err != nil {
		// Also a client that only probed tsize and aborted (EDK2 does).
		// A limit's cut is counted in mayu_tftp_limited_total already.
		switch {
		case errors.Is(err, errNetascii):
			s.metrics.transfers.WithLabelValues("refused").Inc()
		case !errors.Is(err, errLimited):
			s.metrics.transfers.WithLabelValues("failed").Inc()
		}
		return err
	}
	s.metrics.transfers.WithLabelValues("ok").Inc()
	s.metrics.bytes.WithLabelValues().Add(float64(n))
	return nil
}

type hook struct{ log *slog.Logger }

func (h hook) OnSuccess(st tftp.TransferStats) {
	h.log.Debug("tftp: sent", "file", st.Filename, "peer", st.RemoteAddr, "duration", st.Duration)
}

func (h hook) OnFailure(st tftp.TransferStats, err error) {
	h.log.Debug("tftp: transfer ended early", "file", st.Filename, "peer", st.RemoteAddr, "err", err)
}

func clip(s string) string { return hostile.Clip(s, 100) }
