package netlab

import "sync"

// Cleanups is a program's list of deferred cleanups, the counterpart of
// t.Cleanup: Add registers one, Run runs them all, last added first,
// once. A cleanup added after Run runs at once, so that nothing made
// while the program is stopping (on a signal) outlives it.
type Cleanups struct {
	mu   sync.Mutex
	fns  []func()
	done bool
	once sync.Once
}

// Add registers fn; pass it where a constructor wants a cleanup function.
func (c *Cleanups) Add(fn func()) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		fn()
		return
	}
	c.fns = append(c.fns, fn)
	c.mu.Unlock()
}

// Run runs the cleanups, last added first. Concurrent and later calls
// wait until the first has finished.
func (c *Cleanups) Run() {
	c.once.Do(func() {
		c.mu.Lock()
		fns := c.fns
		c.fns, c.done = nil, true
		c.mu.Unlock()
		for i := len(fns) - 1; i >= 0; i-- {
			fns[i]()
		}
	})
}
