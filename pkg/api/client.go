package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// Client calls the admin API of a mayu replica.
type Client struct {
	// BaseURL of the replica's admin listener, e.g. http://10.0.0.2:4080.
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>"; empty: no token (a
	// client certificate in HTTP's transport may stand in for one).
	Token string
	// HTTP is the client used; nil means one with a 30s timeout.
	HTTP *http.Client
	// PageSize is how many machines List asks for per page; 0: the
	// server's default (500).
	PageSize int
}

// Error is an answer of the API other than success: the status and the
// server's message, which says what to do.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// defaultHTTP bounds a call: the server's own etcd calls time out well
// before this.
var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// List returns every machine and the records that could not be read,
// fetching page after page: one document however large the fleet.
func (c *Client) List(ctx context.Context) (*MachineList, error) {
	all := &MachineList{Machines: []*machine.Machine{}, Corrupt: []CorruptRecord{}}
	cont := ""
	for {
		p, err := c.ListPage(ctx, c.PageSize, cont)
		if err != nil {
			return nil, err
		}
		all.Machines = append(all.Machines, p.Machines...)
		all.Corrupt = append(all.Corrupt, p.Corrupt...)
		if p.Continue == "" || p.Continue == cont {
			return all, nil
		}
		cont = p.Continue
	}
}

// ListPage returns one page of machines: up to limit (0: the server's
// default page size) after the continue token cont ("" for the first).
func (c *Client) ListPage(ctx context.Context, limit int, cont string) (*MachineList, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cont != "" {
		q.Set("continue", cont)
	}
	path := "/api/v1/machines"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return call[MachineList](ctx, c, http.MethodGet, path, nil)
}

// Get returns one machine.
func (c *Client) Get(ctx context.Context, id string) (*machine.Machine, error) {
	return call[machine.Machine](ctx, c, http.MethodGet, machinePath(id, ""), nil)
}

// Add pre-registers a machine with the MACs it is known by.
func (c *Client) Add(ctx context.Context, id string, macs []string) (*machine.Machine, error) {
	return call[machine.Machine](ctx, c, http.MethodPost, "/api/v1/machines", AddRequest{ID: id, MACs: macs})
}

// Reinstall sends a machine back to configured: its next network boot
// installs it again.
func (c *Client) Reinstall(ctx context.Context, id string) (*machine.Machine, error) {
	return call[machine.Machine](ctx, c, http.MethodPost, machinePath(id, "/reinstall"), nil)
}

// SetMetadata sets metadata keys of a machine; an empty value deletes the
// key.
func (c *Client) SetMetadata(ctx context.Context, id string, kv map[string]string) (*machine.Machine, error) {
	return call[machine.Machine](ctx, c, http.MethodPost, machinePath(id, "/metadata"), kv)
}

// AddMAC adds a MAC to a machine, whatever its state: the only way a MAC
// joins a machine that is installed.
func (c *Client) AddMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	return call[machine.Machine](ctx, c, http.MethodPost, machinePath(id, "/macs"), AddMACRequest{MAC: mac})
}

// RotateSecret replaces the cluster secret node tokens are made with.
func (c *Client) RotateSecret(ctx context.Context) (*SecretRotation, error) {
	return call[SecretRotation](ctx, c, http.MethodPost, "/api/v1/secret/rotate", nil)
}

// Delete removes a machine, freeing its address and profile slot.
func (c *Client) Delete(ctx context.Context, id string, force bool) error {
	path := machinePath(id, "")
	if force {
		path += "?force=true"
	}
	_, err := call[Deleted](ctx, c, http.MethodDelete, path, nil)
	return err
}

// Config returns the cluster configuration the replica publishes, secrets
// redacted.
func (c *Client) Config(ctx context.Context) (*ConfigView, error) {
	return call[ConfigView](ctx, c, http.MethodGet, "/api/v1/config", nil)
}

// Leases lists the DHCP leases in etcd.
func (c *Client) Leases(ctx context.Context) ([]Lease, error) {
	ls, err := call[[]Lease](ctx, c, http.MethodGet, "/api/v1/leases", nil)
	if err != nil {
		return nil, err
	}
	return *ls, nil
}

// Watch calls f for every machine state change until ctx ends or the
// stream breaks.
func (c *Client) Watch(ctx context.Context, f func(Event)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+"/api/v1/watch", nil)
	if err != nil {
		return err
	}
	c.authorize(req)
	hc := &http.Client{} // no timeout: the stream lasts
	if c.HTTP != nil {
		hc.Transport = c.HTTP.Transport
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb ErrorBody
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			eb.Error = resp.Status
		}
		return &Error{Status: resp.StatusCode, Message: eb.Error}
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the watch stream ended: %w", err)
		}
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
			return errors.New(eb.Error)
		}
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		f(e)
	}
}

// Audit returns the newest entries of the audit trail, at most limit (0:
// the server's default), only those naming machine if it is not empty.
func (c *Client) Audit(ctx context.Context, machine string, limit int) (*AuditList, error) {
	q := url.Values{}
	if machine != "" {
		q.Set("machine", machine)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/api/v1/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return call[AuditList](ctx, c, http.MethodGet, path, nil)
}

// Replicas lists the replicas and the DHCP leader.
func (c *Client) Replicas(ctx context.Context) (*ReplicasView, error) {
	return call[ReplicasView](ctx, c, http.MethodGet, "/api/v1/replicas", nil)
}

// Artifacts lists the catalogue.
func (c *Client) Artifacts(ctx context.Context) (*ArtifactList, error) {
	return call[ArtifactList](ctx, c, http.MethodGet, "/api/v1/artifacts", nil)
}

// Artifact returns one artifact of the catalogue.
func (c *Client) Artifact(ctx context.Context, name string) (*Artifact, error) {
	return call[Artifact](ctx, c, http.MethodGet, artifactPath(name), nil)
}

// AddArtifact asks for an artifact to be downloaded from upstream.
func (c *Client) AddArtifact(ctx context.Context, req AddArtifactRequest) (*Artifact, error) {
	return call[Artifact](ctx, c, http.MethodPost, "/api/v1/artifacts", req)
}

// RemoveArtifact deletes an artifact from the catalogue.
func (c *Client) RemoveArtifact(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, artifactPath(name), nil, &Deleted{})
}

// UploadArtifact streams size bytes of body (-1: unknown) as the artifact
// name; sha256hex, when not empty, is what the bytes must hash to. The
// body is streamed, never held in memory, and the call has no overall
// timeout (ctx bounds it): an image takes as long as it takes.
func (c *Client) UploadArtifact(ctx context.Context, name string, body io.Reader, size int64, sha256hex string) (*Artifact, error) {
	path := artifactPath(name)
	if sha256hex != "" {
		path += "?sha256=" + url.QueryEscape(sha256hex)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if size >= 0 {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Accept", "application/json")
	c.authorize(req)
	hc := defaultHTTP
	if c.HTTP != nil {
		hc = c.HTTP
	}
	nc := *hc
	nc.Timeout = 0
	resp, err := nc.Do(req)
	if err != nil {
		return nil, err
	}
	var out Artifact
	if err := c.answer(req, resp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func artifactPath(name string) string {
	seg := url.PathEscape(name)
	if strings.Trim(name, ".") == "" {
		seg = strings.Repeat("%2E", len(name))
	}
	return "/api/v1/artifacts/" + seg
}

// authorize sends the token; without one the client certificate (of
// HTTP's TLS configuration) is the only credential.
func (c *Client) authorize(req *http.Request) {
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
}

// machinePath escapes id so that whatever an operator typed stays one path
// segment; the server then refuses it if it is not a valid id. Dots are
// escaped too when they are the whole segment, which a proxy would
// otherwise resolve as "this" or "parent" directory.
func machinePath(id, suffix string) string {
	seg := url.PathEscape(id)
	if strings.Trim(id, ".") == "" {
		seg = strings.Repeat("%2E", len(id))
	}
	return "/api/v1/machines/" + seg + suffix
}

// call makes one request and decodes its answer into a T.
func call[T any](ctx context.Context, c *Client, method, path string, body any) (*T, error) {
	var out T
	if err := c.do(ctx, method, path, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	c.authorize(req)
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err // a *url.Error: the server was not reached
	}
	return c.answer(req, resp, out)
}

// answer decodes resp into out, or into an *Error.
func (c *Client) answer(req *http.Request, resp *http.Response, out any) error {
	method := req.Method
	defer resp.Body.Close()
	// Answers are small; the bound only guards against talking to
	// something that is not mayu.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("reading the answer of %s %s: %w", method, req.URL.Redacted(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
			// Not a mayu error: perhaps a proxy, or the wrong port.
			eb.Error = fmt.Sprintf("%s answered %s: %s", req.URL.Redacted(), resp.Status, hostile.Clip(strings.TrimSpace(string(data)), 80))
		}
		return &Error{Status: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s answered something that is not the mayu admin API (%v); is --server the admin port?", req.URL.Redacted(), err)
	}
	return nil
}
