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
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// MaxTransfers bounds concurrent transfers: each holds a socket and a
// goroutine, so a flood of requests (spoofed or not) must not exhaust
// file descriptors that HTTP and etcd need. iPXE binaries are small and
// go fast; a boot storm of a thousand machines stays well below.
const MaxTransfers = 256

// Server is a read-only TFTP server.
type Server struct {
	root   *os.Root
	srv    *tftp.Server
	log    *slog.Logger
	active atomic.Int32

	metrics *metrics
}

// New serves the files of dir. Its metrics go to reg (nil: nowhere).
func New(dir string, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("node.boot_files_dir: %w", err)
	}
	s := &Server{root: root, log: log, metrics: newMetrics(reg)}
	s.srv = tftp.NewServer(s.read, nil) // nil: writes are refused
	s.srv.SetTimeout(2 * time.Second)
	s.srv.SetRetries(5)
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
	if s.active.Add(1) > MaxTransfers {
		s.active.Add(-1)
		s.metrics.transfers.WithLabelValues("refused").Inc()
		return fmt.Errorf("server busy (%d transfers), try again", MaxTransfers)
	}
	defer s.active.Add(-1)
	peer := ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		addr := ot.RemoteAddr()
		peer = addr.String()
	}
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
	n, err := rf.ReadFrom(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		// Also a client that only probed tsize and aborted (EDK2 does).
		s.metrics.transfers.WithLabelValues("failed").Inc()
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
