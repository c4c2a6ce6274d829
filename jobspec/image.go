package jobspec

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Image references as the docker driver reads them ("redis", "ghcr.io/acme/shop:1.2",
// "127.0.0.1:5000/hi@sha256:…"). Parsing is go-containerregistry's, the library that
// control resolves tags with, so what validates here is what resolves there. Nothing in
// this file touches the network.

// ParseImage parses an image reference. A reference with both a tag and a digest
// ("repo:tag@sha256:…") is a digest reference: docker runs the digest.
func ParseImage(image string) (name.Reference, error) {
	if strings.Contains(image, "@") {
		d, err := name.NewDigest(image)
		if err != nil {
			return nil, fmt.Errorf("%q is not an image reference: %w", image, err)
		}
		return d, nil
	}
	t, err := name.NewTag(image)
	if err != nil {
		return nil, fmt.Errorf("%q is not an image reference: %w", image, err)
	}
	return t, nil
}

// HasRuntimeReference reports whether image holds a Nomad runtime reference ("${…}") that
// only the Nomad client fills in, so it cannot be checked or resolved at apply.
func HasRuntimeReference(image string) bool { return strings.Contains(image, "${") }

// ImageDigestOf is the digest an image reference is pinned to ("sha256:…"), or "" for a tag
// reference (or one that does not parse).
func ImageDigestOf(image string) string {
	if ref, err := ParseImage(image); err == nil {
		if d, ok := ref.(name.Digest); ok {
			return d.DigestStr()
		}
	}
	return ""
}

// PinImage returns image pinned to digest, spelled as the user wrote it: its tag, if it
// has one, is replaced by @digest ("127.0.0.1:5000/hi:1" → "127.0.0.1:5000/hi@sha256:…";
// "redis" → "redis@sha256:…"). An image that already names a digest is returned as is.
func PinImage(image, digest string) (string, error) {
	ref, err := ParseImage(image)
	if err != nil {
		return "", err
	}
	if _, ok := ref.(name.Digest); ok {
		return image, nil
	}
	pinned := image
	// The tag is what follows the last ':' of the last path element; a ':' before the
	// last '/' is a registry's port ("localhost:5000/hi" has no tag).
	last := pinned[strings.LastIndex(pinned, "/")+1:]
	if i := strings.LastIndex(last, ":"); i >= 0 {
		pinned = pinned[:len(pinned)-len(last)+i]
	}
	pinned += "@" + digest
	if _, err := name.NewDigest(pinned); err != nil {
		return "", fmt.Errorf("pin %q to %q: %w", image, digest, err)
	}
	return pinned, nil
}
