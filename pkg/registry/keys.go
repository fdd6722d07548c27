package registry

// The registry owns these keys of the schema (package state, documented
// for operators in docs/etcd.md). Every value is JSON; keys that only
// point at a machine hold {"machine":"<id>"}.
//
//	<prefix>machines/<id>            the machine record (machine.Machine)
//	<prefix>macs/<mac>               which machine a MAC belongs to
//	<prefix>addresses/<ip>           which machine holds a static InternalAddr
//	<prefix>profiles/<name>/<slot>   which machine holds slot <slot> of a profile
//	<prefix>alloc/addresses/next     the address allocator's cursor (alloc.go)
//	<prefix>alloc/addresses/free/<ip>          an address given back below it
//	<prefix>alloc/profiles/<name>/next         a profile's slot cursor
//	<prefix>alloc/profiles/<name>/free/<slot>  a slot given back below it
//	<prefix>cluster/secret           the HMAC key of node tokens (and the previous one, for a while)
//	<prefix>schema                   the version of this layout (SchemaVersion)

// owner is the value of every index key.
type owner struct {
	Machine string `json:"machine"`
}

func ownerValue(id string) string {
	return `{"machine":` + quote(id) + `}`
}
