package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultDockerSocket is where dockerd listens unless DOCKER_HOST names another unix socket.
const DefaultDockerSocket = "/var/run/docker.sock"

// dockerHint says how to get a Docker engine.
const dockerHint = "run `make docker` (installs docker.io and docker-registry if needed and starts dockerd)"

// NomadAllocLabel is the label Nomad's docker driver puts on every container it creates.
const NomadAllocLabel = "com.hashicorp.nomad.alloc_id"

// Docker talks to the Docker engine's API over its unix socket, so the version of any
// docker CLI on the machine does not matter. The harness needs only a handful of calls:
// ping, list and remove containers, list and remove images.
type Docker struct {
	Socket string
	hc     *http.Client
}

// NewDocker returns a client of the engine on $DOCKER_HOST (when it is a unix:// socket) or
// DefaultDockerSocket.
func NewDocker() *Docker {
	sock := DefaultDockerSocket
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok && h != "" {
		sock = h
	}
	d := &Docker{Socket: sock}
	d.hc = &http.Client{
		// A backstop: callers bound their calls with a context.
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var nd net.Dialer
				return nd.DialContext(ctx, "unix", sock)
			},
			MaxIdleConns: 2,
		},
	}
	return d
}

// Ping returns nil when the engine answers OK on /_ping, else an error that says how to
// get one.
func (d *Docker) Ping(ctx context.Context) error {
	var body []byte
	err := d.Do(ctx, http.MethodGet, "/_ping", nil, &body)
	if err == nil && strings.TrimSpace(string(body)) != "OK" {
		err = fmt.Errorf("/_ping answered %q", body)
	}
	if err != nil {
		return fmt.Errorf("no Docker engine answers on %s (%v): %s", d.Socket, err, dockerHint)
	}
	return nil
}

// Container is the part of the engine's container list the harness reads.
type Container struct {
	ID     string
	Names  []string
	Image  string
	State  string
	Labels map[string]string
	Mounts []struct{ Source, Destination string }
}

// Containers lists every container (running or not) that carries label (any value).
func (d *Docker) Containers(ctx context.Context, label string) ([]Container, error) {
	q := url.Values{"all": {"1"}}
	if label != "" {
		f, _ := json.Marshal(map[string][]string{"label": {label}})
		q.Set("filters", string(f))
	}
	var cs []Container
	if err := d.Do(ctx, http.MethodGet, "/containers/json?"+q.Encode(), nil, &cs); err != nil {
		return nil, err
	}
	return cs, nil
}

// RemoveContainer kills and removes a container with its anonymous volumes; one that is
// already gone is not an error.
func (d *Docker) RemoveContainer(ctx context.Context, id string) error {
	err := d.Do(ctx, http.MethodDelete, "/containers/"+url.PathEscape(id)+"?force=1&v=1", nil, nil)
	if IsDockerNotFound(err) {
		return nil
	}
	return err
}

// Pull has the engine pull ref (e.g. "127.0.0.1:5000/hello@sha256:…") and waits until it
// is done.
func (d *Docker) Pull(ctx context.Context, ref string) error {
	var body []byte
	if err := d.Do(ctx, http.MethodPost, "/images/create?"+url.Values{"fromImage": {ref}}.Encode(), nil, &body); err != nil {
		return err
	}
	// Errors during the pull arrive in the progress stream, after a 200.
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		var m struct{ Error string }
		if err := dec.Decode(&m); err != nil {
			return nil
		}
		if m.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, m.Error)
		}
	}
}

// Image is the part of the engine's image list the harness reads.
type Image struct {
	ID          string
	RepoTags    []string
	RepoDigests []string
}

// Images lists the engine's images.
func (d *Docker) Images(ctx context.Context) ([]Image, error) {
	var is []Image
	if err := d.Do(ctx, http.MethodGet, "/images/json", nil, &is); err != nil {
		return nil, err
	}
	return is, nil
}

// RemoveImages removes from the engine every image reference (tag or digest) that starts
// with prefix, such as "127.0.0.1:41234/" for everything pulled from one test registry;
// an image goes when its last reference does. It reports how many references it removed.
// An image a container still uses stays (the engine refuses), and is reported.
func (d *Docker) RemoveImages(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, errors.New("RemoveImages: empty prefix")
	}
	is, err := d.Images(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, im := range is {
		for _, ref := range append(append([]string{}, im.RepoTags...), im.RepoDigests...) {
			if !strings.HasPrefix(ref, prefix) {
				continue
			}
			// The route is /images/{name:.*}: the reference's slashes stay as they are.
			err := d.Do(ctx, http.MethodDelete, "/images/"+ref, nil, nil)
			switch {
			case err == nil:
				n++
			case !IsDockerNotFound(err):
				errs = append(errs, fmt.Errorf("remove image %s: %w", ref, err))
			}
		}
	}
	return n, errors.Join(errs...)
}

// DockerError is an answer of the engine other than 2xx.
type DockerError struct {
	Status  int
	Message string
}

func (e *DockerError) Error() string { return fmt.Sprintf("docker engine: %d %s", e.Status, e.Message) }

// IsDockerNotFound reports whether err is the engine's 404.
func IsDockerNotFound(err error) bool {
	var de *DockerError
	return errors.As(err, &de) && de.Status == http.StatusNotFound
}

// Do sends one API request: in, when not nil, is sent as JSON; the answer is decoded into
// out (a *[]byte takes it raw).
func (d *Docker) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var m struct{ Message string }
		if json.Unmarshal(b, &m) != nil || m.Message == "" {
			m.Message = strings.TrimSpace(string(b))
		}
		return &DockerError{Status: resp.StatusCode, Message: m.Message}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = b
		return nil
	default:
		return json.Unmarshal(b, out)
	}
}

// reapContainers removes the containers a Nomad agent whose data lived under dir left
// behind: those that bind-mount something from under dir (the alloc, local and secrets
// dirs Nomad gives every docker task) or whose alloc label names an alloc dir there. It
// touches nothing when no engine socket exists. Only called once the agent is gone.
func reapContainers(dir string) {
	d := NewDocker()
	if _, err := os.Stat(d.Socket); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := d.Containers(ctx, NomadAllocLabel)
	if err != nil {
		return
	}
	for _, c := range cs {
		if ownedBy(c, dir) {
			if err := d.RemoveContainer(ctx, c.ID); err != nil {
				fmt.Fprintf(os.Stderr, "agents: remove container %.12s left by the agent in %s: %v\n", c.ID, dir, err)
			}
		}
	}
}

// ownedBy reports whether container c belongs to the Nomad agent whose data is under dir.
func ownedBy(c Container, dir string) bool {
	for _, m := range c.Mounts {
		if strings.HasPrefix(m.Source, dir+"/") {
			return true
		}
	}
	id := c.Labels[NomadAllocLabel]
	if id == "" || strings.ContainsAny(id, "/.") {
		return false
	}
	for _, allocDir := range []string{filepath.Join(dir, "alloc", id), filepath.Join(dir, "nomad-data", "alloc", id)} {
		if st, err := os.Stat(allocDir); err == nil && st.IsDir() {
			return true
		}
	}
	return false
}
