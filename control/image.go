package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/rouse-run/rouse/jobspec"
)

// Tag → digest resolution at apply, as Knative's revision controller does it: a revision is
// an immutable snapshot, so it runs the content its image's tag named when it was created,
// not whatever the tag names when Nomad next starts an instance. This is the only place
// rouse talks to a registry; the Nomad client pulls the pinned reference itself, with the
// docker driver's own credentials.

// ImageResolveTimeout bounds one resolution, retries included: a registry that does not
// answer fails the apply in seconds, before anything is registered.
const ImageResolveTimeout = 10 * time.Second

// Image error kinds.
const (
	ImageNotFound     = "not found"    // no such repository or tag (HTTP 404)
	ImageUnauthorized = "unauthorized" // credentials missing or refused (401, 403)
	ImageUnreachable  = "unreachable"  // the registry did not answer
	ImageInvalid      = "invalid"      // rouse cannot resolve this reference at all
	ImageFailed       = "failed"       // anything else the registry said
)

// ImageError is an image whose tag could not be resolved to a digest at apply. Nothing
// was registered and the route is unchanged.
type ImageError struct {
	Image  string // as the spec wrote it
	Kind   string // ImageNotFound, ImageUnauthorized, …
	Reason string // the registry's own words ("MANIFEST_UNKNOWN: manifest unknown") or the network's
	// Sidecar names the sidecar whose image it is; "" for the main task's.
	Sidecar string
}

func (e *ImageError) Error() string {
	msg := fmt.Sprintf("image %s: cannot resolve it to a digest: %s", e.Image, e.Reason)
	if e.Sidecar != "" {
		msg = "sidecar " + e.Sidecar + ": " + msg
	}
	switch e.Kind {
	case ImageUnauthorized:
		msg += fmt.Sprintf(" (rouse uses the registry credentials of this machine: docker's config.json in $DOCKER_CONFIG "+
			"or ~/.docker, and its credential helpers; `docker login %s` sets them)", registryOf(e.Image))
	case ImageUnreachable:
		msg += " (if only the Nomad clients can reach this registry, set resolve_image = false in the spec " +
			"or pass --no-resolve-image; the revision then follows the tag)"
	}
	return msg
}

func registryOf(image string) string {
	if ref, err := jobspec.ParseImage(image); err == nil {
		return ref.Context().RegistryStr()
	}
	return "<registry>"
}

// newRegistryTransport is the HTTP transport of registry requests: short dial and header
// timeouts (a registry is an API call away, not a download), proxies from the environment.
func newRegistryTransport() http.RoundTripper {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		IdleConnTimeout:       30 * time.Second,
		MaxIdleConnsPerHost:   2,
	}
}

// resolveImage returns the spec to apply: s with ImageDigest set to the digest its image's
// tag names now, and each sidecar's likewise. A command, an image given by digest, and
// resolve_image = false leave s as it is; the last comes with a warning. The caller's Spec
// is not modified.
func (c *Client) resolveImage(ctx context.Context, s *jobspec.Spec, progress func(Event)) (*jobspec.Spec, string, error) {
	s, warning, err := c.resolveMainImage(ctx, s, progress)
	if err != nil || len(s.Sidecars) == 0 {
		return s, warning, err
	}
	out := *s
	out.Sidecars = slices.Clone(s.Sidecars)
	for i := range out.Sidecars {
		sc := &out.Sidecars[i]
		one := &jobspec.Spec{Image: sc.Image, ImageDigest: sc.ImageDigest, ResolveImage: sc.ResolveImage}
		one, w, err := c.resolveMainImage(ctx, one, progress)
		if err != nil {
			var ie *ImageError
			if errors.As(err, &ie) {
				ie.Sidecar = sc.Name
			}
			return nil, "", err
		}
		sc.ImageDigest = one.ImageDigest
		if w != "" {
			warning = strings.TrimPrefix(warning+"; ", "; ") + "sidecar " + sc.Name + ": " + w
		}
	}
	return &out, warning, nil
}

// resolveMainImage resolves the main task's image (resolveImage without the sidecars).
func (c *Client) resolveMainImage(ctx context.Context, s *jobspec.Spec, progress func(Event)) (*jobspec.Spec, string, error) {
	if s.Image == "" || s.ImageDigest != "" {
		return s, "", nil
	}
	if jobspec.HasRuntimeReference(s.Image) {
		if s.ResolveImage {
			return nil, "", &ImageError{Image: s.Image, Kind: ImageInvalid,
				Reason: "it holds a Nomad runtime reference (${…}) that only the Nomad client fills in; set resolve_image = false"}
		}
		return s, followsTag(s.Image), nil
	}
	ref, err := jobspec.ParseImage(s.Image)
	if err != nil { // Parse rejects these; a hand-built Spec may not
		return nil, "", &ImageError{Image: s.Image, Kind: ImageInvalid, Reason: err.Error()}
	}
	if _, pinned := ref.(name.Digest); pinned {
		return s, "", nil
	}
	if !s.ResolveImage {
		return s, followsTag(s.Image), nil
	}
	emit(progress, StageResolve, "", "Resolving image %s…", s.Image)
	digest, err := c.imageDigest(ctx, ref)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, "", ctxErr
		}
		return nil, "", imageError(s.Image, err)
	}
	emit(progress, StageStatus, "", "%s is %s", s.Image, digest)
	out := *s
	out.ImageDigest = digest
	return &out, "", nil
}

func followsTag(image string) string {
	return fmt.Sprintf("image %s is not pinned to a digest (resolve_image = false): the revision follows the tag, "+
		"so an instance started after the tag moves runs the new content", image)
}

// imageDigest asks the image's registry which digest its tag names, with the credentials
// of docker's config (DOCKER_CONFIG honoured) and credential helpers.
func (c *Client) imageDigest(ctx context.Context, ref name.Reference) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, ImageResolveTimeout)
	defer cancel()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithTransport(c.registry),
		remote.WithUserAgent("rouse"),
		// One quick retry of a flake (a reset connection, a 503), not the library's 1s + 3s.
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: 2}),
	}
	// HEAD is what Docker Hub does not count against pull limits; its answers have no body,
	// so when the registry refuses, GET fetches its reason (and serves registries that
	// do not answer HEAD for manifests, or omit Docker-Content-Digest).
	desc, err := remote.Head(ref, opts...)
	if err == nil {
		return desc.Digest.String(), nil
	}
	var te *transport.Error
	if !errors.As(err, &te) {
		return "", err
	}
	got, gerr := remote.Get(ref, opts...)
	if gerr != nil {
		return "", gerr
	}
	return got.Digest.String(), nil
}

// imageError classifies a registry failure and keeps the registry's own words.
func imageError(image string, err error) *ImageError {
	e := &ImageError{Image: image, Kind: ImageFailed, Reason: err.Error()}
	var te *transport.Error
	switch {
	case errors.As(err, &te):
		var parts []string
		for _, d := range te.Errors {
			parts = append(parts, string(d.Code)+": "+d.Message)
		}
		if len(parts) == 0 {
			parts = append(parts, fmt.Sprintf("HTTP %d %s", te.StatusCode, http.StatusText(te.StatusCode)))
		}
		e.Reason = strings.Join(parts, "; ")
		switch te.StatusCode {
		case http.StatusNotFound:
			e.Kind = ImageNotFound
		case http.StatusUnauthorized, http.StatusForbidden:
			e.Kind = ImageUnauthorized
		}
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind, e.Reason = ImageUnreachable, fmt.Sprintf("the registry did not answer within %s", ImageResolveTimeout)
	case isUnreachable(err):
		e.Kind, e.Reason = ImageUnreachable, rootCause(err)
	}
	return e
}
