package election

import "golang.org/x/sys/unix"

// tcp reads what the kernel knows of the kept connection (TCP_INFO); when
// it cannot tell, the zero tcpState (a kernel answered, as far as it
// knows).
func (k *kept) tcp() tcpState {
	raw, err := k.conn.SyscallConn()
	if err != nil {
		return tcpState{}
	}
	var info *unix.TCPInfo
	raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || info == nil {
		return tcpState{}
	}
	return tcpState{unacked: info.Unacked > 0, retransmitting: info.Retransmits > 0}
}
