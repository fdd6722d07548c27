// Command tftpload fetches one file over TFTP many times, several at a
// time, and prints how long all of it took: bench/tftp.sh's client. Each
// fetch asks for blksize (RFC 2348) as firmware does, acknowledges every
// block (lockstep, RFC 1350), retransmits its last packet after -timeout,
// and must end with exactly -size bytes.
//
//	tftpload -server 10.99.0.2:69 -file ipxe.efi -size 1019520 -n 200 -c 50
//
// Output, one line: fetches=<n> ok=<n> bytes=<n> seconds=<s>
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

type options struct {
	server  *net.UDPAddr
	file    string
	size    int64
	blksize int
	timeout time.Duration
	retries int
}

// fetch reads the file once and returns its length.
func fetch(o options) (int64, error) {
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	rrq := binary.BigEndian.AppendUint16(nil, opRRQ)
	for _, s := range []string{o.file, "octet", "blksize", strconv.Itoa(o.blksize)} {
		rrq = append(append(rrq, s...), 0)
	}
	last, dst := rrq, o.server // what to retransmit, and where
	if _, err := conn.WriteToUDP(last, dst); err != nil {
		return 0, err
	}
	blksize := 512 // until the server accepts the option
	var tid *net.UDPAddr
	var got int64
	next := uint16(1)
	buf := make([]byte, 65536)
	tries := 0
	for {
		conn.SetReadDeadline(time.Now().Add(o.timeout))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && tries < o.retries {
				tries++
				conn.WriteToUDP(last, dst)
				continue
			}
			return got, fmt.Errorf("block %d: %w", next, err)
		}
		if n < 4 {
			continue
		}
		if tid == nil {
			tid, dst = from, from
		} else if !from.IP.Equal(tid.IP) || from.Port != tid.Port {
			continue // not our transfer
		}
		tries = 0
		switch binary.BigEndian.Uint16(buf) {
		case opOACK:
			if next != 1 {
				continue
			}
			opts := bytes.Split(buf[2:n], []byte{0})
			for i := 0; i+1 < len(opts); i += 2 {
				if string(bytes.ToLower(opts[i])) == "blksize" {
					if v, err := strconv.Atoi(string(opts[i+1])); err == nil {
						blksize = v
					}
				}
			}
			last = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), 0)
			conn.WriteToUDP(last, dst)
		case opDATA:
			block := binary.BigEndian.Uint16(buf[2:])
			data := n - 4
			if block != next {
				conn.WriteToUDP(last, dst) // a duplicate: our ACK was lost
				continue
			}
			got += int64(data)
			last = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), block)
			conn.WriteToUDP(last, dst)
			next++
			if data < blksize {
				return got, nil
			}
		case opERROR:
			return got, fmt.Errorf("server error %d: %s", binary.BigEndian.Uint16(buf[2:]), bytes.TrimRight(buf[4:n], "\x00"))
		}
	}
}

func main() {
	server := flag.String("server", "", "TFTP server host:port")
	var o options
	flag.StringVar(&o.file, "file", "", "file to fetch")
	flag.Int64Var(&o.size, "size", -1, "expected size in bytes (-1: do not check)")
	flag.IntVar(&o.blksize, "blksize", 1468, "blksize option to ask for")
	flag.DurationVar(&o.timeout, "timeout", time.Second, "retransmit after this long without an answer")
	flag.IntVar(&o.retries, "retries", 5, "retransmissions before a fetch fails")
	n := flag.Int("n", 200, "fetches")
	c := flag.Int("c", 50, "fetches at a time")
	flag.Parse()
	addr, err := net.ResolveUDPAddr("udp4", *server)
	if err != nil || o.file == "" || *n < 1 || *c < 1 {
		fmt.Fprintln(os.Stderr, "usage: tftpload -server HOST:PORT -file NAME [-size BYTES] [-n 200] [-c 50]")
		os.Exit(2)
	}
	o.server = addr
	var ok, total atomic.Int64
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var errOnce sync.Once
	start := time.Now()
	for i := 0; i < *c; i++ {
		wg.Go(func() {
			for range jobs {
				got, err := fetch(o)
				total.Add(got)
				if err == nil && o.size >= 0 && got != o.size {
					err = fmt.Errorf("%d bytes, want %d", got, o.size)
				}
				if err != nil {
					errOnce.Do(func() { fmt.Fprintln(os.Stderr, "tftpload:", o.file, err) })
					continue
				}
				ok.Add(1)
			}
		})
	}
	for i := 0; i < *n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	fmt.Printf("fetches=%d ok=%d bytes=%d seconds=%.3f\n", *n, ok.Load(), total.Load(), time.Since(start).Seconds())
	if ok.Load() != int64(*n) {
		os.Exit(1)
	}
}
