package jobspec

import (
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// timeouts decodes Knative's two other request timeouts (issue 20), each bounding a part
// of the request that timeout bounds whole:
//
//   - response_start_timeout (responseStartTimeoutSeconds): from the request sent to an
//     instance to the first byte of its response;
//   - idle_timeout (idleTimeoutSeconds): the longest time with no byte either way, for
//     streaming responses and WebSockets.
//
// Both are optional ("0s" is the same as absent: no bound beyond timeout) and at most
// timeout: a longer one could never fire, so it is surely a mistake.
func (d *decoder) timeouts(a body) {
	s := d.spec
	// timeout was decoded first; when it was refused, comparing with its default would
	// report a second, misleading error.
	timeoutOK := !a.has("timeout") || !d.errorAt(a.rng("timeout"))
	for _, t := range []struct {
		name string
		dst  *time.Duration
	}{{"response_start_timeout", &s.ResponseStartTimeout}, {"idle_timeout", &s.IdleTimeout}} {
		if !a.duration(t.name, t.dst, 0, revmeta.MaxTimeout) {
			continue
		}
		if timeoutOK && *t.dst > s.Timeout {
			a.invalid(t.name, "%s (%s) is longer than the request timeout (%s), which bounds the whole request: it could never fire. Make it shorter, or raise timeout.",
				t.name, *t.dst, s.Timeout)
			*t.dst = 0
		}
	}
}

// errorAt reports whether an error was already reported at rng.
func (d *decoder) errorAt(rng hcl.Range) bool {
	for _, dg := range d.diags {
		if dg.Severity == hcl.DiagError && dg.Subject != nil && *dg.Subject == rng {
			return true
		}
	}
	return false
}
