package dhcpprobe

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

func TestUDP4RoundTrip(t *testing.T) {
	for _, payload := range [][]byte{nil, {1}, bytes.Repeat([]byte{0xab}, 300), bytes.Repeat([]byte{0xff}, 301)} {
		pkt := buildUDP4(payload, net.IPv4(10, 0, 0, 2), 67, net.IPv4bcast, 68)
		if checksum(0, pkt[:20]) != 0xffff {
			t.Errorf("IPv4 header checksum does not verify")
		}
		// UDP checksum over the pseudo header verifies to all ones.
		sum := checksum(0, pkt[12:20])
		sum = checksum(sum, []byte{0, 17, pkt[24], pkt[25]})
		if checksum(sum, pkt[20:]) != 0xffff {
			t.Errorf("UDP checksum does not verify")
		}
		got, src, ok := parseUDP4(append(pkt, 0, 0, 0, 0), 68) // Ethernet padding
		if !ok || !bytes.Equal(got, payload) || src.String() != "10.0.0.2:67" {
			t.Errorf("parseUDP4 = %x, %v, %v", got, src, ok)
		}
		if _, _, ok := parseUDP4(pkt, 67); ok {
			t.Error("accepted a datagram to another port")
		}
	}
}

func TestParseUDP4Rejects(t *testing.T) {
	good := buildUDP4([]byte("dhcp"), net.IPv4zero, 68, net.IPv4bcast, 68)
	mutate := func(f func(p []byte)) []byte {
		p := bytes.Clone(good)
		f(p)
		return p
	}
	for name, pkt := range map[string][]byte{
		"short":        good[:19],
		"IPv6":         mutate(func(p []byte) { p[0] = 0x65 }),
		"IHL too big":  mutate(func(p []byte) { p[0] = 0x4f }),
		"truncated":    good[:len(good)-1],
		"TCP":          mutate(func(p []byte) { p[9] = 6 }),
		"fragment":     mutate(func(p []byte) { binary.BigEndian.PutUint16(p[6:], 0x2000) }),
		"UDP len big":  mutate(func(p []byte) { binary.BigEndian.PutUint16(p[24:], 500) }),
		"UDP len tiny": mutate(func(p []byte) { binary.BigEndian.PutUint16(p[24:], 7) }),
	} {
		if _, _, ok := parseUDP4(pkt, 68); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestListenRawNoInterface(t *testing.T) {
	if _, err := ListenRaw("no-such-if0"); err == nil {
		t.Fatal("want an error")
	}
}
