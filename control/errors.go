package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"syscall"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
)

// PermissionError is an ACL denial, turned into the capability the token lacks so that
// the person reading it knows which policy to ask for.
type PermissionError struct {
	System     string // "nomad" or "consul"
	Capability string // "submit-job", "key:write", …
	Resource   string // "namespace default", "rouse/services/default/hello"
	TokenVar   string // NOMAD_TOKEN or CONSUL_HTTP_TOKEN
	NoToken    bool   // no token was configured: the anonymous policy applied
	BadToken   bool   // the agent does not know the token at all
	Detail     string // the agent's own words
}

func (e *PermissionError) Error() string {
	if e.BadToken {
		return fmt.Sprintf("%s: permission denied: the token in %s is not valid (%s)", e.System, e.TokenVar, e.Detail)
	}
	hint := e.TokenVar
	if e.NoToken {
		hint = e.TokenVar + " is not set"
	}
	return fmt.Sprintf("%s: permission denied: this token needs %s on %s (%s)", e.System, e.Capability, e.Resource, hint)
}

// UnreachableError says an agent did not answer at all.
type UnreachableError struct {
	System  string // "Nomad" or "Consul"
	Addr    string
	AddrVar string // NOMAD_ADDR or CONSUL_HTTP_ADDR
	Err     error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach %s at %s: %s (set %s)", e.System, e.Addr, rootCause(e.Err), e.AddrVar)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// NotFoundError is a service or revision that does not exist.
type NotFoundError struct {
	Kind, Name, Namespace string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s %q not found in namespace %s", e.Kind, e.Name, e.Namespace)
}

// RevisionFailedError is a revision that did not become ready. Reason is one line; Events
// are the task events of the failing instance, oldest first; Logs is the tail of its stderr.
type RevisionFailedError struct {
	Revision string
	Reason   string
	Events   []string
	Logs     string
}

func (e *RevisionFailedError) Error() string {
	return fmt.Sprintf("revision %s failed: %s", e.Revision, e.Reason)
}

// PlacementError is a revision Nomad's plan says no node can run (a missing or unhealthy
// driver, constraints no node meets, resources no node has). Nothing was registered.
type PlacementError struct {
	Revision string // the name it would have had
	Reason   string
}

func (e *PlacementError) Error() string {
	return fmt.Sprintf("nomad cannot place revision %s: %s; nothing was registered", e.Revision, e.Reason)
}

// consul's 403 body names the permission: `token with AccessorID '…' lacks permission 'key:write' on "rouse/…"`.
var consulLacks = regexp.MustCompile(`lacks permission '([^']+)' on "([^"]*)"`)

// nomadErr classifies an error of a Nomad call that needs capability in namespace ns.
func (c *Client) nomadErr(err error, capability, ns string) error {
	if err == nil {
		return nil
	}
	if ctxErr := contextErr(err); ctxErr != nil {
		return ctxErr
	}
	var ue nomadapi.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == 403 || strings.Contains(err.Error(), "403 (Permission denied)") ||
		strings.Contains(err.Error(), "ACL token not found") {
		body := ue.Body()
		if body == "" {
			body = err.Error()
		}
		pe := &PermissionError{System: "nomad", Capability: capability, Resource: "namespace " + ns,
			TokenVar: "NOMAD_TOKEN", NoToken: !c.nomadToken, Detail: strings.TrimSpace(body)}
		// Nomad says "Permission denied" for a token it does not know as well; asking
		// who the token is tells the two apart.
		if c.nomadToken {
			if _, _, serr := c.nomad.ACLTokens().Self(nil); serr != nil && strings.Contains(serr.Error(), "403") {
				pe.BadToken, pe.Detail = true, "Nomad does not know it: expired or deleted?"
			}
		}
		pe.BadToken = pe.BadToken || strings.Contains(body, "token not found")
		return pe
	}
	if isUnreachable(err) {
		return &UnreachableError{System: "Nomad", Addr: c.nomadAddr, AddrVar: "NOMAD_ADDR", Err: err}
	}
	return fmt.Errorf("nomad: %w", err)
}

// consulErr classifies an error of a Consul call that needs capability on resource.
func (c *Client) consulErr(err error, capability, resource string) error {
	if err == nil {
		return nil
	}
	if ctxErr := contextErr(err); ctxErr != nil {
		return ctxErr
	}
	var se consulapi.StatusError
	if errors.As(err, &se) && se.Code == 403 || strings.Contains(err.Error(), "403 (Permission denied") ||
		strings.Contains(err.Error(), "ACL not found") {
		body := se.Body
		if body == "" {
			body = err.Error()
		}
		pe := &PermissionError{System: "consul", Capability: capability, Resource: resource,
			TokenVar: "CONSUL_HTTP_TOKEN", NoToken: !c.consulToken, Detail: strings.TrimSpace(body)}
		if m := consulLacks.FindStringSubmatch(body); m != nil {
			pe.Capability, pe.Resource = m[1], m[2]
		}
		pe.BadToken = strings.Contains(body, "ACL not found")
		return pe
	}
	if isUnreachable(err) {
		return &UnreachableError{System: "Consul", Addr: c.consulAddr, AddrVar: "CONSUL_HTTP_ADDR", Err: err}
	}
	return fmt.Errorf("consul: %w", err)
}

// contextErr keeps cancellation recognisable (errors.Is(err, context.Canceled)) instead of
// dressing it up as an unreachable agent.
func contextErr(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	return nil
}

func isUnreachable(err error) bool {
	var ue *url.Error
	var oe *net.OpError
	var de *net.DNSError
	if errors.As(err, &oe) || errors.As(err, &de) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if errors.As(err, &ue) {
		return true
	}
	// The Nomad and Consul clients sometimes flatten the transport error into text.
	s := err.Error()
	for _, m := range []string{"connection refused", "no such host", "i/o timeout", "connection reset", "dial tcp"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// rootCause is the innermost message of a transport error ("dial tcp 127.0.0.1:4646:
// connect: connection refused"), without the URL noise the HTTP client adds.
func rootCause(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
