package gateway

import (
	"math/rand/v2"
	"strconv"

	"github.com/rouse-run/rouse/gateway/http1"
)

// route finds the revision a request for host goes to: the host's route, then one of
// its targets by weight, drawn per request. Every HTTP engine calls it; the failure
// says how to answer instead (the reason names it in metrics and the access log).
func (g *Gateway) route(host []byte) (*revision, *failure) {
	rt := g.routing.Load()
	if rt == nil {
		return nil, &failure{&http1.Error{Status: 503, Reason: "starting", Msg: "rouse: the gateway has not read its routes from Consul yet\n"}, "1"}
	}
	route := rt.tbl.Lookup(host)
	if route == nil {
		g.metrics.unknownHost.Inc()
		return nil, &failure{&http1.Error{Status: 404, Reason: "unknown_host", Msg: "rouse: no service for host " + strconv.Quote(string(host)) + "\n"}, ""}
	}
	tgt := route.Pick(rand.Uint32())
	if tgt == nil {
		return nil, &failure{&http1.Error{Status: 503, Reason: "no_target", Msg: "rouse: service " + route.Namespace + "/" + route.Service + " has no revision with a traffic share\n"}, ""}
	}
	return rt.revs[tgt.Index], nil
}
