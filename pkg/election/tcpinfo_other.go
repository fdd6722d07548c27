//go:build !linux

package election

// tcp: without TCP_INFO nothing is known, and a probe is never
// Unreachable (a dead host is then found by the timeouts alone).
func (k *kept) tcp() tcpState { return tcpState{} }
