package tftp

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzRequest sends any datagram to a running server's port, as a hostile
// host on the boot network could. The server never panics, never writes,
// never reads outside its directory, and answers with an error, an option
// acknowledgement, or the first block of a file it serves.
func FuzzRequest(f *testing.F) {
	s := start(f, fastLimits)
	// A file beside the directory, reachable only by escaping it.
	os.WriteFile(filepath.Join(filepath.Dir(s.root.Name()), "secret"), []byte("root:x:0:0"), 0o644)
	rrq := func(name, mode string, opts ...string) []byte {
		b := []byte{0, 1}
		for _, s := range append([]string{name, mode}, opts...) {
			b = append(append(b, s...), 0)
		}
		return b
	}
	f.Add(rrq("undionly.kpxe", "octet"))
	f.Add(rrq("undionly.kpxe", "octet", "blksize", "1468", "tsize", "0"))
	f.Add(rrq("../secret", "octet"))
	f.Add(rrq("undionly.kpxe", "netascii"))
	f.Add(rrq("undionly.kpxe", "octet", "blksize", "99999999999999999999", "windowsize", "-1"))
	f.Add(append([]byte{0, 2}, rrq("x", "octet")[2:]...)) // a write request
	f.Add([]byte{0, 1, 'a'})
	f.Add([]byte{0, 4, 0, 1}) // an acknowledgement nobody asked for
	f.Add([]byte{})
	server, err := net.ResolveUDPAddr("udp4", s.addr)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, packet []byte) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Skip(err) // out of ports for a moment: not the server's fault
		}
		defer c.Close()
		if _, err := c.WriteToUDP(packet, server); err != nil {
			return
		}
		buf := make([]byte, 65536)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return // silence is a fine answer to nonsense
		}
		reply := buf[:n]
		if bytes.Contains(reply, []byte("root:x")) {
			t.Fatalf("%q got a file from outside the directory: %q", packet, reply)
		}
		if len(reply) < 4 {
			t.Fatalf("%q got a runt reply %q", packet, reply)
		}
		switch op := binary.BigEndian.Uint16(reply); op {
		case 3: // DATA: block 1 of the one file served
			// (Not checked against this packet's opcode: a late
			// retransmission for an earlier iteration may reach this
			// one's socket if it got the same port.)
			if block := binary.BigEndian.Uint16(reply[2:]); block != 1 || !bytes.HasPrefix(s.data, reply[4:]) {
				t.Fatalf("%q got block %d that is not the file's first", packet, block)
			}
		case 5, 6: // ERROR, OACK
		default:
			t.Fatalf("%q got opcode %d", packet, op)
		}
	})
}
