package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/web"
)

// Artifacts is the artifact catalogue and this replica's cache
// (artifact.Manager).
type Artifacts interface {
	List() []artifact.Record
	Lookup(name string) (artifact.Record, bool)
	Holders(sha256hex string) []artifact.Holder
	Progress(name string) []artifact.Progress
	Add(ctx context.Context, req artifact.AddRequest, who string) (artifact.Record, error)
	Upload(ctx context.Context, name string, body io.Reader, size int64, sha256hex, who string) (artifact.Record, error)
	Remove(ctx context.Context, name string, inUse func(name string) string) error
}

func (a *handler) artifactList(w http.ResponseWriter, r *http.Request) {
	if !a.haveArtifacts(w) {
		return
	}
	out := api.ArtifactList{Artifacts: []api.Artifact{}, Replicas: []string{}}
	for _, rec := range a.artifacts.List() {
		out.Artifacts = append(out.Artifacts, a.artifactView(rec))
	}
	if a.replicas != nil {
		if list, err := a.replicas.Replicas(r.Context()); err == nil {
			for _, i := range list {
				out.Replicas = append(out.Replicas, i.Name)
			}
		}
	}
	web.JSON(w, http.StatusOK, out)
}

func (a *handler) artifactGet(w http.ResponseWriter, r *http.Request) {
	name, ok := a.artifactName(w, r)
	if !ok {
		return
	}
	rec, ok := a.artifacts.Lookup(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no artifact %s (`mayuctl artifact list` shows the catalogue)", name))
		return
	}
	web.JSON(w, http.StatusOK, a.artifactView(rec))
}

func (a *handler) artifactAdd(w http.ResponseWriter, r *http.Request) {
	if !a.haveArtifacts(w) {
		return
	}
	var req api.AddArtifactRequest
	if !decodeBody(w, r, &req) {
		return
	}
	rec, err := a.artifacts.Add(r.Context(), artifact.AddRequest{Name: req.Name, URL: req.URL, SHA256: req.SHA256,
		DigestsURL: req.DigestsURL, SigURL: req.SigURL, Keyring: req.Keyring}, callerOf(r))
	if err != nil {
		a.artifactFail(w, r, req.Name, err)
		return
	}
	a.log.Info("artifact added", "name", rec.Name, "url", rec.Source.URL, "who", callerOf(r))
	web.JSON(w, http.StatusAccepted, a.artifactView(rec))
}

func (a *handler) artifactUpload(w http.ResponseWriter, r *http.Request) {
	name, ok := a.artifactName(w, r)
	if !ok {
		return
	}
	sum := r.URL.Query().Get("sha256")
	if sum != "" {
		if err := artifact.CheckSHA256(sum); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if _, taken := a.artifacts.Lookup(name); taken {
		writeError(w, http.StatusConflict, fmt.Sprintf("artifact %s exists: names are immutable, give the new version a new name", name))
		return
	}
	rec, err := a.artifacts.Upload(r.Context(), name, r.Body, r.ContentLength, sum, callerOf(r))
	if err != nil {
		a.artifactFail(w, r, name, err)
		return
	}
	a.log.Info("artifact uploaded", "name", rec.Name, "sha256", rec.SHA256, "size", rec.Size, "who", callerOf(r))
	web.JSON(w, http.StatusCreated, a.artifactView(rec))
}

func (a *handler) artifactRemove(w http.ResponseWriter, r *http.Request) {
	name, ok := a.artifactName(w, r)
	if !ok {
		return
	}
	// In use by this replica's configuration, or by the one the DHCP
	// leader publishes: during a rolling change they differ, and either
	// may be the one machines are served by.
	var published *config.Cluster
	if a.replicas != nil {
		p, err := a.replicas.Published(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "cannot read the configuration the DHCP leader publishes, which may name "+name+": "+err.Error())
			return
		}
		if p != nil {
			published = &p.Cluster
		}
	}
	err := a.artifacts.Remove(r.Context(), name, func(n string) string {
		if keys := usedBy(a.cfgCluster(), n); len(keys) > 0 {
			return "the configuration names it in " + strings.Join(keys, ", ")
		}
		if published != nil {
			if keys := usedBy(published, n); len(keys) > 0 {
				return "the configuration the DHCP leader publishes names it in " + strings.Join(keys, ", ")
			}
		}
		return ""
	})
	if err != nil {
		a.artifactFail(w, r, name, err)
		return
	}
	a.log.Info("artifact removed", "name", name, "who", callerOf(r))
	web.JSON(w, http.StatusOK, api.Deleted{ID: name})
}

// artifactName returns the {name} of the route, refusing a malformed one.
func (a *handler) artifactName(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !a.haveArtifacts(w) {
		return "", false
	}
	name, err := url.PathUnescape(mux.Vars(r)["name"])
	if err == nil {
		err = artifact.CheckName(name)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return name, true
}

func (a *handler) haveArtifacts(w http.ResponseWriter) bool {
	if a.artifacts == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica has no artifact catalogue")
		return false
	}
	return true
}

// artifactFail maps the catalogue's errors to answers that say what to do.
func (a *handler) artifactFail(w http.ResponseWriter, r *http.Request, name string, err error) {
	switch {
	case errors.Is(err, artifact.ErrDigest), errors.Is(err, artifact.ErrSignature):
		writeError(w, http.StatusUnprocessableEntity, err.Error()+"; nothing was stored")
	case errors.Is(err, artifact.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, artifact.ErrExists):
		writeError(w, http.StatusConflict, fmt.Sprintf("artifact %s exists: names are immutable, give the new version a new name", name))
	case errors.Is(err, artifact.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no artifact %s (`mayuctl artifact list` shows the catalogue)", name))
	case errors.Is(err, artifact.ErrInUse):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, artifact.ErrNoSpace):
		writeError(w, http.StatusInsufficientStorage, err.Error())
	default:
		a.fail(w, r, err)
	}
}

func (a *handler) artifactView(rec artifact.Record) api.Artifact {
	v := api.Artifact{Name: rec.Name, SHA256: rec.SHA256, Size: rec.Size, Status: rec.Status, Error: rec.Error,
		URL: rec.Source.URL, Uploaded: rec.Source.Uploaded, DigestsURL: rec.Source.DigestsURL, SigURL: rec.Source.SigURL,
		SHA512: rec.Source.SHA512, Verified: rec.Verified, AddedBy: rec.AddedBy, AddedAt: rec.AddedAt, ReadyAt: rec.ReadyAt,
		Holders: []api.ArtifactHolder{}, Progress: []api.ArtifactProgress{}, UsedBy: usedBy(a.cfgCluster(), rec.Name)}
	if rec.SHA256 != "" {
		for _, h := range a.artifacts.Holders(rec.SHA256) {
			v.Holders = append(v.Holders, api.ArtifactHolder{Replica: h.Replica, PeerURL: h.PeerURL, Since: h.Since})
		}
	}
	for _, p := range a.artifacts.Progress(rec.Name) {
		v.Progress = append(v.Progress, api.ArtifactProgress{Replica: p.Replica, From: p.From, Bytes: p.Bytes, Total: p.Total, Updated: p.Updated})
	}
	sort.Slice(v.Holders, func(i, j int) bool { return v.Holders[i].Replica < v.Holders[j].Replica })
	sort.Slice(v.Progress, func(i, j int) bool { return v.Progress[i].Replica < v.Progress[j].Replica })
	return v
}

// cfgCluster is this replica's cluster configuration (nil: none).
func (a *handler) cfgCluster() *config.Cluster {
	if a.cfg == nil {
		return nil
	}
	return &a.cfg.Cluster
}

// usedBy lists the configuration keys of c that name artifact name.
func usedBy(c *config.Cluster, name string) []string {
	keys := []string{}
	if c == nil {
		return keys
	}
	for _, role := range config.InstallRoles {
		if n, ok := config.ArtifactName(c.Source("", role)); ok && n == name {
			keys = append(keys, "cluster.install."+role)
		}
	}
	for i, p := range c.Profiles {
		for _, role := range config.InstallRoles {
			if n, ok := config.ArtifactName(p.Install.Source(role)); ok && n == name {
				keys = append(keys, "cluster.profiles["+strconv.Itoa(i)+"].install."+role)
			}
		}
	}
	return keys
}

// missingArtifacts returns, for a replica, the artifacts the
// configuration names that some replica holds and it does not.
func (a *handler) missingArtifacts() func(replica string) []string {
	held := map[string]map[string]bool{} // name → holders
	if a.artifacts != nil && a.cfg != nil {
		for _, name := range a.cfg.Cluster.Artifacts() {
			rec, ok := a.artifacts.Lookup(name)
			if !ok || rec.SHA256 == "" {
				continue
			}
			if hs := a.artifacts.Holders(rec.SHA256); len(hs) > 0 {
				held[name] = map[string]bool{}
				for _, h := range hs {
					held[name][h.Replica] = true
				}
			}
		}
	}
	return func(replica string) []string {
		var out []string
		for name, holders := range held {
			if !holders[replica] {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out
	}
}
