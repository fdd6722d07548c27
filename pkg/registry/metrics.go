package registry

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/machine"
	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Registry's machine metrics (docs/metrics.md).
type metrics struct {
	registrations     *prometheus.CounterVec
	installsCompleted *prometheus.CounterVec
	installsFailed    *prometheus.CounterVec
	refused           *prometheus.CounterVec
	expired           *prometheus.CounterVec
	allocRebuilds     *prometheus.CounterVec
	resyncs           *prometheus.CounterVec
}

// newMetrics registers r's metrics on reg (nil: nowhere), with
// mayu_machines read from etcd through r at each scrape.
func newMetrics(reg prometheus.Registerer, r *Registry) *metrics {
	m := &metrics{
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "registrations_total",
			Help: "Machines registered by this replica (first contact or mayuctl add)."}, nil),
		installsCompleted: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "installs_completed_total",
			Help: "Installs announced as completed to this replica."}, nil),
		installsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "installs_failed_total",
			Help: "Installs marked failed by this replica, by reason (installer, timeout, config)."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "registrations_refused_total",
			Help: "Registrations on first contact refused by this replica, by reason (rate_limited: beyond cluster.self_registration's rate; unfinished: cluster.self_registration.max_unfinished machines not installed yet)."}, []string{"reason"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "registrations_expired_total",
			Help: "Machines registered on first contact that never started an install, deleted by this replica after cluster.self_registration.expire_after."}, nil),
		allocRebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "allocator_rebuilds_total",
			Help: "Times this replica rebuilt the allocator's cursor and free set from the whole index, by space (addresses, profile_slots): the first registration after an upgrade or a change of cluster.static.range start, and each registration while the hints say the space is full."}, []string{"space"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Name: "watch_resyncs_total",
			Help: "Times a watch of this replica broke and what it follows was loaded afresh from etcd, by watch (installed, known, secret) and reason (compacted: etcd compacted away the revision it was to resume from; broken: an etcd outage or leader change)."}, []string{"watch", "reason"}),
	}
	// Every series starts at 0, so that increase() sees the first event
	// (MayuInstallsFailing fires on a replica's first failed install).
	m.registrations.WithLabelValues()
	m.refused.WithLabelValues("rate_limited")
	m.refused.WithLabelValues("unfinished")
	m.expired.WithLabelValues()
	m.allocRebuilds.WithLabelValues("addresses")
	m.allocRebuilds.WithLabelValues("profile_slots")
	for _, w := range []string{"installed", "known", "secret"} {
		for _, reason := range []string{"compacted", "broken"} {
			m.resyncs.WithLabelValues(w, reason)
		}
	}
	m.installsCompleted.WithLabelValues()
	for _, reason := range []string{"installer", "timeout", "config"} {
		m.installsFailed.WithLabelValues(reason)
	}
	machines := &machineCollector{r: r, desc: prometheus.NewDesc("mayu_machines",
		"Machines by state and profile, as stored in etcd.", []string{"state", "profile"}, nil),
		corrupt: prometheus.NewDesc("mayu_machines_corrupt",
			"Machine records in etcd that cannot be read; DHCP stays silent to their MACs.", nil, nil)}
	mayumetrics.MustRegister(reg, m.registrations, m.installsCompleted, m.installsFailed, m.refused, m.expired, m.allocRebuilds, m.resyncs, machines)
	return m
}

// CountInstallCompleted counts an install announced to this replica as
// completed (mayu_installs_completed_total).
func (r *Registry) CountInstallCompleted() { r.metrics.installsCompleted.WithLabelValues().Inc() }

// CountInstallFailed counts an install this replica marked failed, by
// reason: "installer" (it reported an error), "timeout" or "config" (its
// first stage or final config does not render or validate)
// (mayu_installs_failed_total).
func (r *Registry) CountInstallFailed(reason string) {
	r.metrics.installsFailed.WithLabelValues(reason).Inc()
}

// machineCollector counts the machines in etcd by state and profile at
// each scrape: the same on every replica.
type machineCollector struct {
	r    *Registry
	desc *prometheus.Desc
	// corrupt counts the unreadable records: each keeps its machine
	// silenced (FollowInstalled) until an operator fixes or deletes it.
	corrupt *prometheus.Desc
}

func (c *machineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.corrupt
}

func (c *machineCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	// Counted page by page: a scrape holds one page of records, not
	// the fleet.
	counts, bad := map[[2]string]int{}, 0
	err := c.r.each(ctx, func(m *machine.Machine) { counts[[2]string{string(m.State), m.Profile}]++ }, func(*CorruptError) { bad++ })
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.corrupt, prometheus.GaugeValue, float64(bad))
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// resynced is a Follower's Resynced for the watch called name: counted,
// and logged.
func (r *Registry) resynced(name string, log *slog.Logger) func(compacted bool) {
	return func(compacted bool) {
		reason := "broken"
		if compacted {
			reason = "compacted"
		}
		r.metrics.resyncs.WithLabelValues(name, reason).Inc()
		if log != nil {
			log.Info("watch resynced: loaded afresh from etcd", "watch", name, "reason", reason)
		}
	}
}
