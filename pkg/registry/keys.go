package registry

// The key schema, documented for operators in docs/etcd.md. Every value is
// JSON. Keys that only point at a machine hold {"machine":"<id>"}.
//
//	<prefix>machines/<id>            the machine record (machine.Machine)
//	<prefix>macs/<mac>               which machine a MAC belongs to
//	<prefix>addresses/<ip>           which machine holds a static InternalAddr
//	<prefix>profiles/<name>/<slot>   which machine holds slot <slot> of a profile
//	<prefix>cluster/secret           the HMAC key of node tokens
const (
	machinesDir  = "machines/"
	macsDir      = "macs/"
	addressesDir = "addresses/"
	profilesDir  = "profiles/"
	secretKey    = "cluster/secret"
)

// owner is the value of every index key.
type owner struct {
	Machine string `json:"machine"`
}

func (r *Registry) machineKey(id string) string   { return r.prefix + machinesDir + id }
func (r *Registry) macKey(mac string) string      { return r.prefix + macsDir + mac }
func (r *Registry) addressKey(addr string) string { return r.prefix + addressesDir + addr }
func (r *Registry) profileKey(name string, slot int) string {
	return r.prefix + profilesDir + name + "/" + itoa(slot)
}
