package registry

// AfterInstalledLoad runs f after each load of the installed MACs, before
// the watch that follows it starts.
func AfterInstalledLoad(r *Registry, f func()) { r.afterInstalledLoad = f }
