package dhcp

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// budget is a token bucket of new clients per source: a listed relay, or
// a pool (Server.source). A flood of made-up MACs
// from one relay then takes addresses no faster than the bucket refills,
// and the other relays' machines keep being answered.
type budget struct {
	rate  rate.Limit
	burst int

	mu       sync.Mutex
	sources  map[string]*rate.Limiter
	overflow *rate.Limiter // every source beyond maxBudgetSources
}

// maxBudgetSources bounds the buckets kept (sources are pools and listed
// relays, so it is a guard, not a limit met in practice). Sources beyond it
// share one bucket.
const maxBudgetSources = 1024

func newBudget(perSecond float64, burst int) *budget {
	return &budget{rate: rate.Limit(perSecond), burst: burst, sources: map[string]*rate.Limiter{},
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

// allow takes one new client from source's bucket, if there is one left.
func (b *budget) allow(source string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.sources[source]
	if l == nil {
		if len(b.sources) >= maxBudgetSources {
			b.sweep(now)
		}
		if len(b.sources) >= maxBudgetSources {
			return b.overflow.AllowN(now, 1)
		}
		l = rate.NewLimiter(b.rate, b.burst)
		b.sources[source] = l
	}
	return l.AllowN(now, 1)
}

// sweep forgets the full buckets: a new one is the same.
func (b *budget) sweep(now time.Time) {
	for k, l := range b.sources {
		if l.TokensAt(now) >= float64(b.burst) {
			delete(b.sources, k)
		}
	}
}
