package gateway

import (
	"math/rand/v2"
	"net/http"
	"strconv"

	"github.com/rouse-run/rouse/gateway/http1"
	"github.com/rouse-run/rouse/gateway/table"
)

// TagHeader names the tag a request on a service's main host goes to, for a service with
// tag_header_routing on (Knative's tag-header-based-routing). It is forwarded to the
// instance as it came.
const TagHeader = "Rouse-Tag"

// route finds the revision an HTTP/1.1 request goes to (see lookup and pick). A
// Rouse-Tag header is looked for only when the host's route honours it.
func (c *conn) route() (*revision, *failure) {
	rt, route, f := c.g.lookup(c.req.Host, c.internal)
	if f != nil {
		return nil, f
	}
	if route.HeaderTags() {
		if tag := c.tagHeader(); tag != nil {
			route = route.ForTag(tag)
		}
	}
	return c.g.pick(rt, route)
}

// tagHeader is the value of the request's first Rouse-Tag line (nil without one): the
// line is among the kept ones, which are forwarded.
func (c *conn) tagHeader() []byte {
	return c.req.KeptValue(c.buf[c.r:c.r+c.req.HeadLen], TagHeader)
}

// route finds the revision an HTTP/2 stream goes to.
func (h *h2Stream) route(r *http.Request) (*revision, *failure) {
	rt, route, f := h.g.lookup([]byte(r.Host), h.internal)
	if f != nil {
		return nil, f
	}
	if route.HeaderTags() {
		if v := r.Header[TagHeader]; len(v) > 0 {
			route = route.ForTag([]byte(v[0]))
		}
	}
	return h.g.pick(rt, route)
}

// lookup finds the route of host on the listener a request came in on: the internal
// listener's table has the internal services and domain, the public one's does not, so
// an internal service's host on the public listener is an unknown host, answered the
// same. Every HTTP engine calls it, then pick; the failure says how to answer instead
// (the reason names it in metrics and the access log).
func (g *Gateway) lookup(host []byte, internal bool) (*routing, *table.Route, *failure) {
	rt := g.routing.Load()
	if rt == nil {
		return nil, nil, &failure{&http1.Error{Status: 503, Reason: "starting", Msg: "rouse: the gateway has not read its routes from Consul yet\n"}, "1"}
	}
	var route *table.Route
	if internal {
		route = rt.tbl.LookupInternal(host)
	} else {
		route = rt.tbl.Lookup(host)
	}
	if route == nil {
		g.metrics.unknownHost.Inc()
		return nil, nil, &failure{&http1.Error{Status: 404, Reason: "unknown_host", Msg: "rouse: no service for host " + strconv.Quote(string(host)) + "\n"}, ""}
	}
	return rt, route, nil
}

// pick draws one of the route's targets by weight, per request.
func (g *Gateway) pick(rt *routing, route *table.Route) (*revision, *failure) {
	tgt := route.Pick(rand.Uint32())
	if tgt == nil {
		return nil, &failure{&http1.Error{Status: 503, Reason: "no_target", Msg: "rouse: service " + route.Namespace + "/" + route.Service + " has no revision with a traffic share\n"}, ""}
	}
	return rt.revs[tgt.Index], nil
}

// MetaInternal is the key of a gateway's Consul service meta that holds its internal
// listener's address (absent without one).
const MetaInternal = "internal"
