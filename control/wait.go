package control

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// readiness is how apply decides that an instance is ready: the revision's own check,
// made as the gateway's probe makes it.
type readiness struct {
	Type string // "http", "tcp" or "grpc"
	Path string // "http": the path to GET
	// Service is the "grpc" check's grpc.health.v1 service name ("": the whole server).
	Service string
	// H2C: the instances speak HTTP/2 without TLS (protocol = "h2c"), so an "http" probe
	// is an HTTP/2 GET, as the gateway's. A "grpc" probe always is.
	H2C bool
}

// readinessOf reads the check jobspec compiled into the revision's Consul service, and
// the protocol from the job's meta.
func readinessOf(job *nomadapi.Job) readiness {
	h2c := job.Meta[revmeta.KeyProtocol] == revmeta.ProtocolH2C
	for _, tg := range job.TaskGroups {
		// Revisions compiled before the service moved to the task have it on the group.
		services := tg.Services
		for _, t := range tg.Tasks {
			services = append(services, t.Services...)
		}
		for _, s := range services {
			for _, ch := range s.Checks {
				switch ch.Type {
				case "tcp":
					return readiness{Type: "tcp", H2C: h2c}
				case "grpc":
					return readiness{Type: "grpc", Service: ch.GRPCService, H2C: true}
				case "http":
					p := ch.Path
					if p == "" {
						p = "/"
					}
					return readiness{Type: "http", Path: p, H2C: h2c}
				}
			}
		}
	}
	return readiness{Type: "http", Path: "/", H2C: h2c}
}

// fatalEvents are task events after which an instance that was never ready will not
// become ready on its own soon: apply reports them instead of waiting out its deadline.
// A server that exits, even with code 0, is not serving.
var fatalEvents = []string{
	nomadapi.TaskTerminated, nomadapi.TaskDriverFailure, nomadapi.TaskSetupFailure,
	nomadapi.TaskFailedValidation, nomadapi.TaskArtifactDownloadFailed, nomadapi.TaskNotRestarting,
	nomadapi.TaskSiblingFailed,
}

// waitReady polls until one instance of rev answers its readiness probe (or passes its
// Consul check, for callers that cannot reach the instances' network), an instance fails,
// or wait passes. Failures are *RevisionFailedError; a cancelled ctx is ctx.Err().
func (c *Client) waitReady(ctx context.Context, ns, rev, evalID string, probe readiness, wait time.Duration, progress func(Event)) error {
	deadline := c.now().Add(wait)
	addrs := map[string]string{} // alloc ID → host:port of its http port
	last := "no instance placed yet"
	lastShown := ""
	for {
		allocs, _, err := c.nomad.Jobs().Allocations(rev, false, c.qo(ctx, ns))
		if err != nil {
			return c.nomadErr(err, "read-job", ns)
		}
		sort.Slice(allocs, func(i, j int) bool { return allocs[i].CreateIndex > allocs[j].CreateIndex })
		if f := failureOf(allocs); f != nil {
			f.Revision = rev
			var stderr bool
			f.Logs, stderr = c.logTail(ctx, ns, f.allocID)
			// The docker driver's logger may not have copied a container's last words
			// yet when its exit is reported: give it a moment.
			for i := 0; i < 3 && f.Logs == "" && strings.HasPrefix(f.Reason, nomadapi.TaskTerminated); i++ {
				select {
				case <-ctx.Done():
				case <-time.After(300 * time.Millisecond):
				}
				f.Logs, stderr = c.logTail(ctx, ns, f.allocID)
			}
			if line := stderrReason(f.Logs); stderr && line != "" {
				// The process's own words say more than an exit code ("boom: config missing").
				f.Reason += "; stderr: " + line
			}
			return &f.RevisionFailedError
		}
		for _, a := range allocs {
			if a.ClientStatus != nomadapi.AllocClientStatusRunning {
				continue
			}
			addr, ok := addrs[a.ID]
			if !ok {
				addr = c.allocAddr(ctx, ns, a.ID)
				if addr != "" {
					addrs[a.ID] = addr
				}
			}
			if addr == "" {
				last = "instance " + short(a.ID) + " is running but has no address yet"
				continue
			}
			ok, what := c.probeOnce(ctx, addr, probe)
			if ok {
				return nil
			}
			last = "instance " + short(a.ID) + " is running; readiness probe " + what
		}
		if len(allocs) == 0 && evalID != "" {
			if reason := c.placementFailure(ctx, ns, evalID); reason != "" {
				return &RevisionFailedError{Revision: rev, Reason: reason}
			}
		} else if len(allocs) > 0 && allocs[0].ClientStatus == nomadapi.AllocClientStatusPending {
			last = "instance " + short(allocs[0].ID) + " is starting"
		}
		if es, _, err := c.consul.Health().Service(rev, "", true, (&consulapi.QueryOptions{}).WithContext(ctx)); err == nil && len(es) > 0 {
			return nil
		}
		if last != lastShown {
			emit(progress, StageStatus, rev, "%s", last)
			lastShown = last
		}
		if c.now().After(deadline) {
			f := &RevisionFailedError{Revision: rev, Reason: fmt.Sprintf("not ready within %s: %s", wait, last)}
			if len(allocs) > 0 {
				f.Events = eventLines(allocs[0])
				f.Logs, _ = c.logTail(ctx, ns, allocs[0].ID)
			}
			return f
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.poll):
		}
	}
}

// probeOnce runs the revision's readiness probe once against addr; Knative's rule: an
// HTTP status in [200, 400) is ready. A grpc probe is the call Consul's check and the
// gateway's probe make: grpc.health.v1.Health/Check, SERVING.
func (c *Client) probeOnce(ctx context.Context, addr string, p readiness) (bool, string) {
	switch {
	case p.Type == "tcp":
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, "tcp " + addr + ": " + rootCause(err)
		}
		conn.Close()
		return true, ""
	case p.Type == "grpc":
		return grpcProbe(ctx, addr, p.Service)
	}
	url := "http://" + addr + p.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "rouse-apply-probe")
	client, what := c.probe, "GET "
	if p.H2C {
		client, what = h2cProbe, "GET (h2c) "
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, what + url + ": " + rootCause(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	return false, what + url + ": " + resp.Status
}

// h2cProbe is c.probe for instances that speak only HTTP/2 without TLS (protocol =
// "h2c", gRPC servers): prior knowledge, no Upgrade, one connection per probe.
var h2cProbe = func() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: time.Second,
		Transport:     &http.Transport{Protocols: &p, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}()

// grpcProbe calls grpc.health.v1.Health/Check for service over h2c: ready when the
// answer is SERVING. The two messages are encoded by hand (HealthCheckRequest{service},
// HealthCheckResponse{status}): grpc-go's client would be the CLI's largest dependency
// for one call.
func grpcProbe(ctx context.Context, addr, service string) (bool, string) {
	what := "grpc.health.v1.Health/Check " + addr
	if service != "" {
		what += " (service " + strconv.Quote(service) + ")"
	}
	var msg []byte
	if service != "" {
		msg = protowire.AppendTag(msg, 1, protowire.BytesType)
		msg = protowire.AppendString(msg, service)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) // uncompressed, length
	body = append(body, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader(body))
	if err != nil {
		return false, what + ": " + err.Error()
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "rouse-apply-probe")
	resp, err := h2cProbe.Do(req)
	if err != nil {
		return false, what + ": " + rootCause(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if err != nil {
		return false, what + ": " + rootCause(err)
	}
	return grpcHealthAnswer(what, resp, b)
}

// grpcHealthAnswer reads the answer to a health check (b: its body, read by then, so the
// trailers are in).
func grpcHealthAnswer(what string, resp *http.Response, b []byte) (bool, string) {
	if resp.StatusCode != http.StatusOK {
		return false, what + ": HTTP " + resp.Status + " (not a gRPC server?)"
	}
	// A trailers-only answer (an error with no message) has its status in the header.
	st, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if st == "" {
		st, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	if st == "" {
		return false, what + ": no grpc-status in the answer (not a gRPC server?)"
	}
	if st != "0" {
		s := what + ": grpc-status " + st
		if m, err := url.PathUnescape(msg); err == nil && m != "" {
			s += ": " + m
		} else if msg != "" {
			s += ": " + msg
		}
		return false, s
	}
	status, ok := healthStatus(b)
	switch {
	case !ok:
		return false, what + ": malformed HealthCheckResponse"
	case status == healthServing:
		return true, ""
	}
	return false, what + ": " + healthStatusName(status)
}

// grpc.health.v1.HealthCheckResponse.ServingStatus values.
const (
	healthUnknown        = 0
	healthServing        = 1
	healthNotServing     = 2
	healthServiceUnknown = 3
)

func healthStatusName(s uint64) string {
	switch s {
	case healthUnknown:
		return "UNKNOWN"
	case healthServing:
		return "SERVING"
	case healthNotServing:
		return "NOT_SERVING"
	case healthServiceUnknown:
		return "SERVICE_UNKNOWN"
	}
	return "status " + strconv.FormatUint(s, 10)
}

// healthStatus decodes one gRPC length-prefixed, uncompressed HealthCheckResponse:
// its status (field 1; absent means UNKNOWN, protobuf's zero value).
func healthStatus(b []byte) (uint64, bool) {
	if len(b) < 5 || b[0] != 0 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 {
		return 0, false
	}
	b = b[5:]
	var status uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0, false
			}
			status, b = v, b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b) // a field this probe does not know
		if m < 0 {
			return 0, false
		}
		b = b[m:]
	}
	return status, true
}

// allocAddr is host:port of the allocation's http port, "" when not known yet.
func (c *Client) allocAddr(ctx context.Context, ns, allocID string) string {
	a, _, err := c.nomad.Allocations().Info(allocID, c.qo(ctx, ns))
	if err != nil || a.AllocatedResources == nil {
		return ""
	}
	for _, p := range a.AllocatedResources.Shared.Ports {
		if p.Label == revmeta.PortLabel && p.Value > 0 {
			return net.JoinHostPort(p.HostIP, strconv.Itoa(p.Value))
		}
	}
	for _, n := range a.AllocatedResources.Shared.Networks {
		for _, p := range n.DynamicPorts {
			if p.Label == revmeta.PortLabel && p.Value > 0 {
				return net.JoinHostPort(n.IP, strconv.Itoa(p.Value))
			}
		}
	}
	return ""
}

type allocFailure struct {
	RevisionFailedError
	allocID string
}

// failureOf finds the first instance (newest first) that failed, and says why.
func failureOf(allocs []*nomadapi.AllocationListStub) *allocFailure {
	for _, a := range allocs {
		var reason, sibling string // sibling: a task stopped because another failed, the fallback
		for task, ts := range a.TaskStates {
			for _, ev := range ts.Events {
				if task != revmeta.Task && ev.Type == nomadapi.TaskTerminated && ev.Details["exit_code"] == "0" {
					continue // a sidecar's init task that ran to completion (sidecars.go)
				}
				for _, t := range fatalEvents {
					switch {
					case ev.Type != t:
					case t == nomadapi.TaskSiblingFailed:
						sibling = cmp.Or(sibling, eventText(ev))
					case reason == "" && task != revmeta.Task:
						reason = "sidecar " + task + ": " + eventText(ev)
					case reason == "":
						reason = eventText(ev)
					}
				}
				if reason == "" && templateBlocked(ev) {
					reason = eventText(ev) + " (the template waits for a Nomad Variable that does not exist, or that the revision may not read)"
				}
			}
		}
		reason = cmp.Or(reason, sibling)
		if reason == "" && (a.ClientStatus == nomadapi.AllocClientStatusFailed || a.ClientStatus == nomadapi.AllocClientStatusLost) {
			reason = "instance " + a.ClientStatus
			if a.ClientDescription != "" {
				reason += ": " + a.ClientDescription
			}
		}
		if reason != "" {
			return &allocFailure{RevisionFailedError: RevisionFailedError{Reason: reason, Events: eventLines(a)}, allocID: a.ID}
		}
	}
	return nil
}

// templateBlocked: Nomad's template runner says what the task's templates wait for
// ("Missing: nomad.var.block(nomad/jobs/shop/db@default.global)"); the task will not start
// until someone writes it. Apply checks the variables first (variables.go), so this is one
// deleted since, or read through a Vault or Consul function rouse does not check.
func templateBlocked(ev *nomadapi.TaskEvent) bool {
	return ev.Type == "Template" && strings.HasPrefix(ev.DisplayMessage, "Missing: ")
}

// eventText renders an event as Nomad's CLI does: "Terminated: Exit Code: 1".
func eventText(ev *nomadapi.TaskEvent) string {
	msg := ev.DisplayMessage
	if msg == "" {
		for _, m := range []string{ev.DriverError, ev.SetupError, ev.ValidationError, ev.DownloadError, ev.Message} {
			if m != "" {
				msg = m
				break
			}
		}
	}
	if msg == "" && ev.Type == nomadapi.TaskTerminated {
		msg = "Exit Code: " + strconv.Itoa(ev.ExitCode)
	}
	if msg == "" {
		return ev.Type
	}
	return ev.Type + ": " + msg
}

// eventLines are the task's events, oldest first, with their time.
func eventLines(a *nomadapi.AllocationListStub) []string {
	var out []string
	ts := a.TaskStates[revmeta.Task]
	if ts == nil {
		for _, s := range a.TaskStates {
			ts = s
			break
		}
	}
	if ts == nil {
		return nil
	}
	for _, ev := range ts.Events {
		out = append(out, time.Unix(0, ev.Time).Format("15:04:05")+" "+eventText(ev))
	}
	return out
}

// logTail is the end of the instance's stderr (or stdout when stderr is empty, then
// stderr is false): usually the line that says why the process died. The docker driver's
// logs go through the same API. Best effort: "" when logs cannot be read.
func (c *Client) logTail(ctx context.Context, ns, allocID string) (tail string, stderr bool) {
	if allocID == "" {
		return "", false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	a, _, err := c.nomad.Allocations().Info(allocID, c.qo(ctx, ns))
	if err != nil {
		return "", false
	}
	for _, stream := range []string{"stderr", "stdout"} {
		if s := c.readLog(ctx, ns, a, stream); strings.TrimSpace(s) != "" {
			return lastLines(s, 15), stream == "stderr"
		}
	}
	return "", false
}

// stderrReason is the line of a dead process's stderr that says why: a Go runtime's
// "panic: …" or "fatal error: …" line when there is one (what follows is the trace), else
// the last line. At most 200 characters; "" for no output.
func stderrReason(tail string) string {
	var last string
	for _, l := range strings.Split(tail, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			last = l
			break
		}
		if l != "" {
			last = l
		}
	}
	if r := []rune(last); len(r) > 200 {
		last = string(r[:200]) + "…"
	}
	return last
}

func (c *Client) readLog(ctx context.Context, ns string, a *nomadapi.Allocation, stream string) string {
	var b strings.Builder
	_ = c.readFrames(ctx, ns, a, stream, false, nomadapi.OriginEnd, 4096, func(f *nomadapi.StreamFrame) { b.Write(f.Data) })
	return b.String() // best effort: what was read before any error
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// placementFailure says why Nomad placed no instance, "" while it has not given up.
func (c *Client) placementFailure(ctx context.Context, ns, evalID string) string {
	ev, _, err := c.nomad.Evaluations().Info(evalID, c.qo(ctx, ns))
	if err != nil || ev.Status != "complete" {
		return ""
	}
	return placementReason(ev.FailedTGAllocs)
}

// placementReason says why Nomad could not place a group's instances (an evaluation's or a
// plan's FailedTGAllocs), "" when nothing failed.
func placementReason(failed map[string]*nomadapi.AllocationMetric) string {
	if len(failed) == 0 {
		return ""
	}
	var parts []string
	for _, m := range failed {
		if m == nil {
			continue
		}
		parts = append(parts, fmt.Sprintf("%d node(s) evaluated", m.NodesEvaluated))
		for k, n := range m.ConstraintFiltered {
			part := fmt.Sprintf("constraint %s filtered %d node(s)", k, n)
			if strings.Contains(k, "${meta."+revmeta.GuardBinMeta+"}") {
				// The guard a hard concurrency limit adds needs the node's rouse binary.
				part += ": concurrency > 0 runs rouse's guard beside the app, so its clients need raw_exec and meta { " +
					revmeta.GuardBinMeta + ` = "/path/to/rouse" } (docs/spec.md, concurrency)`
			}
			parts = append(parts, part)
		}
		for k, n := range m.ClassFiltered {
			parts = append(parts, fmt.Sprintf("class %s filtered %d node(s)", k, n))
		}
		for k, n := range m.DimensionExhausted {
			parts = append(parts, fmt.Sprintf("%s exhausted on %d node(s)", k, n))
		}
		for dc, n := range m.NodesAvailable {
			if n == 0 {
				parts = append(parts, "no node available in datacenter "+dc)
			}
		}
	}
	sort.Strings(parts[min(1, len(parts)):])
	return "no node can run it (" + strings.Join(parts, "; ") + ")"
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
