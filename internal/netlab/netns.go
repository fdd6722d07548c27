package netlab

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs f on an OS thread that joined network namespace ns (one
// this lab made: /var/run/netns/<ns>), and brings the thread back to the
// process's namespace afterwards. Sockets f opens stay in ns, so a test
// can be a client or a server there without a helper process. The thread
// must come back (else it dies with the goroutine): were it the main
// thread, `ip netns pids` would count the whole process as one of ns and
// Close would kill it.
func InNetns(ns string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- nil
	}()
	return <-errc
}
