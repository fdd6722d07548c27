package admin

import (
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// Router is the admin API's router, for the test that holds
// docs/admin-api.yaml to it.
func Router() *mux.Router {
	a, _ := build(Options{})
	return a.router(prometheus.NewRegistry())
}
