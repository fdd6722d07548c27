package httpboot

import (
	"net/http"

	"github.com/mayu-boot/mayu/pkg/machine"
)

// httpError answers a plain-text message: nodes run curl or wget, and an
// operator reads the message in the installer's console.
func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
}

// nodeState is what a node callback answers: enough for the node to log,
// nothing of other machines' business.
type nodeState struct {
	ID    string        `json:"id"`
	State machine.State `json:"state"`
}

func stateOf(m *machine.Machine) nodeState { return nodeState{ID: m.ID, State: m.State} }
