package jobspec

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/rouse-run/rouse/internal/revmeta"
	"github.com/rouse-run/rouse/internal/store"
)

// Limits that are not Knative's or Nomad's own: they only reject values that are surely
// mistakes (a 16 TiB task). The autoscaling settings' bounds are revmeta's.
const (
	maxConcurrency = 1000    // Knative's container-concurrency-max-limit
	maxCPU         = 1000000 // MHz
	maxMemory      = 1 << 24 // MiB
	maxLabel       = 63      // DNS label
	minTimeout     = time.Second
	maxDuration    = time.Hour // readiness interval and timeout
	defaultPort    = 8080      // Knative's default container port
)

// Nomad's defaults for resources, which Nomad users know.
const (
	defaultCPU    = 100
	defaultMemory = 300
)

func serviceSchema() *hcl.BodySchema {
	return &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "namespace"}, {Name: "revision_name"}, {Name: "datacenters"},
			{Name: "image"}, {Name: "resolve_image"}, {Name: "command"}, {Name: "driver"}, {Name: "args"}, {Name: "port"}, {Name: "network"},
			{Name: "protocol"}, {Name: "env"}, {Name: "concurrency"}, {Name: "timeout"},
			{Name: "response_start_timeout"}, {Name: "idle_timeout"}, // timeouts.go
			{Name: "visibility"}, {Name: "tag_header_routing"}, // routing.go
		},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "resources"}, {Type: "readiness"}, {Type: "constraint"},
			{Type: "autoscaling"}, {Type: "traffic"},
			{Type: "template"}, // templates.go
			{Type: "volume", LabelNames: []string{"name"}},  // volumes.go
			{Type: "sidecar", LabelNames: []string{"name"}}, // sidecars.go
		},
	}
}

// decodeService decodes and validates the service block into a Spec with defaults applied.
func decodeService(block *hcl.Block, sc *scope) (*Spec, hcl.Diagnostics) {
	s := &Spec{
		Name:        block.Labels[0],
		Namespace:   "default",
		Datacenters: []string{"*"},
		Resources:   Resources{CPU: defaultCPU, MemoryMB: defaultMemory},
		Timeout:     revmeta.DefaultTimeout,
		Readiness:   Readiness{Type: "http", Path: "/", Interval: time.Second, Timeout: time.Second},
		DefRange:    block.DefRange,
		ranges:      map[string]hcl.Range{},
	}
	d := &decoder{sc: sc, spec: s}
	s.ranges["name"] = block.LabelRanges[0]
	if msg := dnsLabel(s.Name, true); msg != "" {
		d.errorf(block.LabelRanges[0], "Invalid service name", "Service name %q %s.", s.Name, msg)
	}

	content, diags := block.Body.Content(serviceSchema())
	d.diags = append(d.diags, diags...)
	a := body{d: d, attrs: content.Attributes}

	if a.str("namespace", &s.Namespace) {
		if msg := dnsLabel(s.Namespace, false); msg != "" {
			a.invalid("namespace", "Namespace %q %s; it is part of the service's host name.", s.Namespace, msg)
		}
	}
	if a.strList("datacenters", &s.Datacenters) {
		if len(s.Datacenters) == 0 {
			a.invalid("datacenters", `datacenters must not be empty; ["*"] (the default) means every datacenter.`)
		}
		for _, dc := range s.Datacenters {
			if dc == "" {
				a.invalid("datacenters", "A datacenter name must not be empty.")
				break
			}
		}
	}
	d.workload(a)
	d.protocol(a)
	d.env(a)

	a.int("concurrency", &s.Concurrency, 0, maxConcurrency)
	a.duration("timeout", &s.Timeout, minTimeout, revmeta.MaxTimeout)
	d.timeouts(a)
	d.routing(a)

	if b := d.singleBlock(content.Blocks, "resources"); b != nil {
		r := body{d: d, path: "resources.", label: "resources.", attrs: d.content(b, attrSchema("cpu", "memory", "memory_max"))}
		r.int("cpu", &s.Resources.CPU, 1, maxCPU)
		memOK := r.int("memory", &s.Resources.MemoryMB, 10, maxMemory) || !r.has("memory")
		if r.int("memory_max", &s.Resources.MemoryMaxMB, 10, maxMemory) && memOK && s.Resources.MemoryMaxMB < s.Resources.MemoryMB {
			r.invalid("memory_max", "memory_max (%d MiB) must be at least memory (%d MiB).", s.Resources.MemoryMaxMB, s.Resources.MemoryMB)
		}
	}
	if b := d.singleBlock(content.Blocks, "readiness"); b != nil {
		d.readiness(body{d: d, path: "readiness.", label: "readiness.", attrs: d.content(b, attrSchema("type", "path", "interval", "timeout"))})
	}
	for i, b := range content.Blocks.OfType("constraint") {
		d.constraint(b, body{d: d, path: fmt.Sprintf("constraint[%d].", i), label: "constraint.",
			attrs: d.content(b, attrSchema("attribute", "operator", "value"))})
	}
	as := body{d: d, path: "autoscaling.", label: "autoscaling."}
	if b := d.singleBlock(content.Blocks, "autoscaling"); b != nil {
		as.attrs = d.content(b, attrSchema("metric", "target", "target_utilization_percentage", "min", "max", "initial",
			"window", "panic_window_percentage", "panic_threshold_percentage", "max_scale_up_rate", "max_scale_down_rate",
			"scale_to_zero_grace", "target_burst_capacity", "scale_down_delay", "activation_scale"))
	}
	d.autoscaling(as)
	d.templates(content.Blocks.OfType("template"))
	d.volumes(content.Blocks.OfType("volume"))
	d.sidecars(content.Blocks.OfType("sidecar"))
	d.revisionName(a)
	d.traffic(content.Blocks.OfType("traffic"))
	return s, d.diags
}

// workload decodes what runs: an image (docker) or a command (raw_exec/exec).
func (d *decoder) workload(a body) {
	s := d.spec
	hasImage, hasCommand := a.has("image"), a.has("command")
	switch {
	case hasImage && hasCommand:
		d.errorf(a.rng("command"), "Conflicting image and command",
			"A service runs either a container image (docker driver) or a command (raw_exec or exec driver), not both.")
	case !hasImage && !hasCommand:
		d.errorf(s.DefRange, "Missing image or command",
			`Set image = "<registry/image:tag>" to run a container, or command = "<path>" to run a program with raw_exec or exec.`)
	}
	if a.str("image", &s.Image) {
		switch {
		case strings.TrimSpace(s.Image) == "":
			a.invalid("image", "image must not be empty.")
		case HasRuntimeReference(s.Image):
			// Only the Nomad client can read it; resolve_image = false is then required
			// (apply says so), and docker checks the rest.
		default:
			if _, err := ParseImage(s.Image); err != nil {
				a.invalid("image", "%s. Write it as docker does: [registry[:port]/]repository[:tag] or …@sha256:<digest>.", err)
			}
		}
	}
	s.ResolveImage = hasImage
	if a.bool("resolve_image", &s.ResolveImage) && !hasImage {
		d.errorf(a.rng("resolve_image"), "Unexpected resolve_image",
			"resolve_image says whether apply pins an image's tag to its digest; a command has no image.")
		s.ResolveImage = false
	}
	if a.str("command", &s.Command) && strings.TrimSpace(s.Command) == "" {
		a.invalid("command", "command must not be empty.")
	}
	a.strList("args", &s.Args)
	if len(s.Args) == 0 {
		s.Args = nil // one spelling for "no args", so the hash does not tell [] from absent
	}

	a.str("driver", &s.Driver)
	switch {
	case hasImage && !hasCommand:
		if s.Driver == "" {
			s.Driver = "docker"
		}
		if s.Driver != "docker" {
			a.invalid("driver", "An image runs with the docker driver, not %q; for raw_exec or exec use command instead of image.", s.Driver)
		}
		s.Network = NetworkBridge
		if a.str("network", &s.Network) && s.Network != NetworkBridge && s.Network != NetworkHost {
			a.invalid("network", `network is "bridge" (the default: the container's own network, port mapped from the node) or "host" (the node's network; the app listens on $PORT), not %q.`, s.Network)
		}
		if s.Network == NetworkHost {
			if a.has("port") {
				d.errorf(a.rng("port"), "Unexpected port",
					`With network = "host" the container shares the node's network, so it must listen on the port Nomad assigns, passed in $PORT. `+
						"port only sets the port inside a bridge-networked container.")
			}
			break
		}
		s.Port = defaultPort
		a.int("port", &s.Port, 1, 65535)
	case hasCommand && !hasImage:
		if s.Driver == "" {
			s.Driver = "raw_exec"
		}
		if s.Driver != "raw_exec" && s.Driver != "exec" {
			a.invalid("driver", `A command runs with driver "raw_exec" (the default) or "exec", not %q.`, s.Driver)
		}
		if a.has("port") {
			d.errorf(a.rng("port"), "Unexpected port",
				"A command shares the node's network, so it must listen on the port Nomad assigns, passed in $PORT. "+
					"port only sets the port inside an image's container.")
		}
		if a.has("network") {
			d.errorf(a.rng("network"), "Unexpected network",
				"A command shares the node's network; network chooses an image's container network.")
		}
	}
}

// protocol decodes how the gateway talks to the instances. With h2c the readiness check
// defaults to tcp: Consul's and Nomad's HTTP check speaks HTTP/1.1, which an h2c-only
// server (grpc-go's, for one) refuses.
func (d *decoder) protocol(a body) {
	s := d.spec
	s.Protocol = revmeta.ProtocolHTTP1
	if !a.str("protocol", &s.Protocol) {
		return
	}
	switch s.Protocol {
	case revmeta.ProtocolHTTP1:
	case revmeta.ProtocolH2C:
		s.Readiness.Type, s.Readiness.Path = "tcp", ""
	default:
		a.invalid("protocol", `protocol is %q (the default: HTTP/1.1 to the instances) or %q (HTTP/2 without TLS, which gRPC servers need), not %q.`,
			revmeta.ProtocolHTTP1, revmeta.ProtocolH2C, s.Protocol)
	}
}

// reservedEnv are set by rouse on every instance.
func reservedEnv(name string) bool {
	switch name {
	case "PORT", "ROUSE_SERVICE", "ROUSE_REVISION", "ROUSE_NAMESPACE":
		return true
	}
	return false
}

func (d *decoder) env(a body) { d.envMap(a, &d.spec.Env, reservedEnv, "instance") }

// envMap decodes an env map into dst (nil when empty): every name valid and none that
// reserved says rouse sets itself on every `who` ("instance", "task"); each name's range
// is recorded under a.path for RangeOf.
func (d *decoder) envMap(a body, dst *map[string]string, reserved func(string) bool, who string) {
	if !a.strMap("env", dst) {
		return
	}
	keys := make([]string, 0, len(*dst))
	for k := range *dst {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case !validEnvName(k):
			d.errorf(a.keyRange("env", k), "Invalid environment variable name",
				"%q is not a valid environment variable name: use letters, digits and underscores, not starting with a digit.", k)
		case reserved(k):
			d.errorf(a.keyRange("env", k), "Reserved environment variable",
				"rouse sets %s on every %s; choose another name.", k, who)
		default:
			d.spec.ranges[a.path+"env."+k] = a.keyRange("env", k)
		}
	}
	if len(*dst) == 0 {
		*dst = nil
	}
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func (d *decoder) readiness(r body) {
	rd := &d.spec.Readiness
	h2c := d.spec.Protocol == revmeta.ProtocolH2C
	typed := r.str("type", &rd.Type)
	if typed {
		switch rd.Type {
		case "http":
			if rd.Path == "" { // cleared by protocol = "h2c"
				rd.Path = "/"
			}
		case "tcp":
		case "grpc":
			if d.spec.Protocol == revmeta.ProtocolHTTP1 {
				r.invalid("type", `A grpc readiness check needs protocol = "h2c": gRPC runs over HTTP/2, and with protocol = "http1" `+
					`(the default) the gateway speaks HTTP/1.1 to the instances.`)
			}
		default:
			r.invalid("type", `type must be "http", "tcp" or "grpc", not %q.`, rd.Type)
		}
	}
	if r.str("path", &rd.Path) {
		switch {
		case rd.Type == "tcp" && h2c && !typed:
			r.invalid("path", `With protocol = "h2c" the readiness type defaults to "tcp", which has no path. `+
				`Set type = "http" if the server also answers HTTP/1.1 (Consul's HTTP check speaks HTTP/1.1), `+
				`or type = "grpc" for the gRPC health check.`)
		case rd.Type == "tcp":
			r.invalid("path", "A tcp readiness check has no path.")
		case rd.Type == "grpc":
			r.invalid("path", `A grpc readiness check has no path: it calls grpc.health.v1.Health/Check for the whole server (service "").`)
		case !strings.HasPrefix(rd.Path, "/"):
			r.invalid("path", "path must start with \"/\", not %q.", rd.Path)
		}
	}
	if rd.Type == "tcp" || rd.Type == "grpc" {
		rd.Path = ""
	}
	// Consul's minimum interval and timeout are 1s.
	r.duration("interval", &rd.Interval, time.Second, maxDuration)
	r.duration("timeout", &rd.Timeout, time.Second, maxDuration)
}

// constraintOperators are Nomad's; value says whether the operator needs a value.
func constraintOperators() map[string]bool {
	return map[string]bool{
		"=": true, "==": true, "is": true, "!=": true, "not": true,
		">": true, ">=": true, "<": true, "<=": true,
		"regexp": true, "set_contains": true, "set_contains_all": true, "set_contains_any": true,
		"version": true, "semver": true,
		"distinct_hosts": false, "distinct_property": false, "is_set": false, "is_not_set": false,
	}
}

func (d *decoder) constraint(blk *hcl.Block, c body) {
	con := Constraint{Operator: "="}
	c.str("attribute", &con.Attribute)
	c.str("operator", &con.Operator)
	c.str("value", &con.Value)
	needsValue, known := constraintOperators()[con.Operator]
	switch {
	case !known:
		c.invalid("operator", "Unknown constraint operator %q; Nomad's are =, !=, >, >=, <, <=, regexp, set_contains, "+
			"set_contains_all, set_contains_any, version, semver, distinct_hosts, distinct_property, is_set, is_not_set.", con.Operator)
	case con.Operator != "distinct_hosts" && con.Attribute == "":
		d.errorf(c.rngOr("attribute", blk.DefRange), "Missing constraint attribute",
			`A %q constraint needs attribute, such as "${node.class}" or "${attr.kernel.name}".`, con.Operator)
	case needsValue && con.Value == "" && !c.has("value"):
		d.errorf(blk.DefRange, "Missing constraint value", "A %q constraint needs value.", con.Operator)
	case con.Operator == "regexp":
		if _, err := regexp.Compile(con.Value); err != nil {
			c.invalid("value", "value is not a regular expression: %s.", err)
		}
	}
	d.spec.Constraints = append(d.spec.Constraints, con)
}

// autoscaling resolves the settings with Knative's defaults, reporting values outside
// revmeta's bounds (the ones Autoscaling.Validate enforces) against the source.
func (d *decoder) autoscaling(as body) {
	s := d.spec
	x := revmeta.DefaultAutoscaling()
	if as.str("metric", &x.Metric) && x.Metric != revmeta.MetricConcurrency && x.Metric != revmeta.MetricRPS {
		as.invalid("metric", `metric must be %q or %q, not %q.`, revmeta.MetricConcurrency, revmeta.MetricRPS, x.Metric)
	}
	hasTarget := as.float("target", &x.Target, revmeta.MinTarget, math.MaxFloat64, false)
	var util float64
	if as.float("target_utilization_percentage", &util, revmeta.MinTargetUtilization*100, 100, false) {
		x.TargetUtilization = util / 100
	}
	as.int("min", &x.Min, 0, revmeta.MaxCount)
	as.int("max", &x.Max, 0, revmeta.MaxCount)
	as.int("initial", &x.Initial, 0, revmeta.MaxCount)
	as.duration("window", &x.Window, revmeta.MinWindow, revmeta.MaxWindow)
	as.float("panic_window_percentage", &x.PanicWindowPct, revmeta.MinPanicWindowPct, revmeta.MaxPanicWindowPct, false)
	as.float("panic_threshold_percentage", &x.PanicThresholdPct, revmeta.MinPanicThresholdPct, revmeta.MaxPanicThresholdPct, false)
	as.float("max_scale_up_rate", &x.MaxScaleUpRate, revmeta.MinScaleRate, math.MaxFloat64, true)
	as.float("max_scale_down_rate", &x.MaxScaleDownRate, revmeta.MinScaleRate, math.MaxFloat64, true)
	as.duration("scale_to_zero_grace", &x.ScaleToZeroGrace, 0, revmeta.MaxScaleToZeroGrace)
	if as.float("target_burst_capacity", &x.TargetBurstCapacity, -1, math.MaxFloat64, false) &&
		x.TargetBurstCapacity < 0 && x.TargetBurstCapacity != -1 {
		as.invalid("target_burst_capacity", "target_burst_capacity must be -1 (unlimited) or at least 0, not %g.", x.TargetBurstCapacity)
	}
	as.duration("scale_down_delay", &x.ScaleDownDelay, 0, revmeta.MaxScaleDownDelay)
	as.int("activation_scale", &x.ActivationScale, 0, revmeta.MaxCount)
	if x.ActivationScale == 1 {
		// One is what a wake starts anyway: keep it out of the template hash and job meta.
		x.ActivationScale = 0
	}

	if x.Max > 0 && x.Min > x.Max {
		d.errorf(as.rng("min"), "Invalid autoscaling bounds", "min (%d) is greater than max (%d).", x.Min, x.Max)
	}
	if x.Max > 0 && x.Initial > x.Max {
		d.errorf(as.rng("initial"), "Invalid autoscaling bounds", "initial (%d) is greater than max (%d).", x.Initial, x.Max)
	}
	if x.Max > 0 && x.ActivationScale > x.Max {
		d.errorf(as.rng("activation_scale"), "Invalid autoscaling bounds", "activation_scale (%d) is greater than max (%d).", x.ActivationScale, x.Max)
	}

	// Knative: the concurrency target defaults to the hard limit when there is one, and
	// never exceeds it.
	switch {
	case !hasTarget && x.Metric == revmeta.MetricConcurrency && s.Concurrency > 0:
		x.Target = float64(s.Concurrency)
	case !hasTarget:
		x.Target = revmeta.DefaultTarget(x.Metric)
	case x.Metric == revmeta.MetricConcurrency && s.Concurrency > 0 && x.Target > float64(s.Concurrency):
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Autoscaling target above concurrency",
			Detail: fmt.Sprintf("target %g is more than the hard limit concurrency = %d an instance accepts; using %d.",
				x.Target, s.Concurrency, s.Concurrency),
			Subject: as.rng("target").Ptr(),
		})
		x.Target = float64(s.Concurrency)
	}
	s.Autoscaling = x
}

func (d *decoder) revisionName(a body) {
	s := d.spec
	if !a.str("revision_name", &s.RevisionName) {
		// <name>-00001 must still be a DNS label: it names the Consul service.
		if len(s.Name)+6 > maxLabel && dnsLabel(s.Name, true) == "" {
			d.errorf(s.ranges["name"], "Invalid service name",
				"Service name %q is too long: revisions are named %s-00001, which must fit in %d characters, so the name may have at most %d.",
				s.Name, s.Name, maxLabel, maxLabel-6)
		}
		return
	}
	if msg := dnsLabel(s.RevisionName, true); msg != "" {
		a.invalid("revision_name", "Revision name %q %s.", s.RevisionName, msg)
		return
	}
	// Knative's rule: a service's revisions carry its name, so they cannot collide with
	// another service's and traffic can be checked to stay within the service.
	if !strings.HasPrefix(s.RevisionName, s.Name+"-") {
		a.invalid("revision_name", "Revision name %q must start with the service name followed by a dash (%q).", s.RevisionName, s.Name+"-")
	}
}

func (d *decoder) traffic(blocks hcl.Blocks) {
	s := d.spec
	if len(blocks) == 0 {
		s.Traffic = []store.TrafficTarget{{Latest: true, Percent: 100}}
		s.TrafficRanges = []hcl.Range{s.DefRange}
		return
	}
	sum, sumKnown := 0, true
	tags := map[string]hcl.Range{}
	for i, blk := range blocks {
		t := store.TrafficTarget{}
		b := body{d: d, path: fmt.Sprintf("traffic[%d].", i), label: "traffic.",
			attrs: d.content(blk, attrSchema("revision", "latest", "percent", "tag"))}
		hasRev := b.str("revision", &t.Revision)
		b.bool("latest", &t.Latest)
		if b.has("percent") {
			if !b.int("percent", &t.Percent, 0, 100) {
				sumKnown = false
			}
		}
		sum += t.Percent
		hasTag := b.str("tag", &t.Tag)

		switch {
		case b.has("revision") && t.Latest:
			d.errorf(b.rng("revision"), "Invalid traffic target",
				"A traffic block names either revision or latest = true, not both.")
		case !b.has("revision") && !t.Latest:
			d.errorf(blk.DefRange, "Invalid traffic target",
				`A traffic block needs revision = "<revision>" or latest = true.`)
		case hasRev && dnsLabel(t.Revision, true) != "":
			b.invalid("revision", "Revision name %q %s.", t.Revision, dnsLabel(t.Revision, true))
		case hasRev && !strings.HasPrefix(t.Revision, s.Name+"-"):
			b.invalid("revision", "Revision %q is not a revision of service %q, whose revisions are named %s-….", t.Revision, s.Name, s.Name)
		}
		if hasTag {
			switch msg := dnsLabel(t.Tag, true); {
			case msg != "":
				b.invalid("tag", "Tag %q %s.", t.Tag, msg)
			case len(t.Tag)+1+len(s.Name) > maxLabel:
				b.invalid("tag", "Tag %q is too long: the tag's host name %s-%s must fit in %d characters.", t.Tag, t.Tag, s.Name, maxLabel)
			}
			if prev, dup := tags[t.Tag]; dup {
				d.errorf(b.rng("tag"), "Duplicate traffic tag", "Tag %q is already used by the traffic block at %s.", t.Tag, prev)
			} else {
				tags[t.Tag] = b.rng("tag")
			}
		}
		s.Traffic = append(s.Traffic, t)
		s.TrafficRanges = append(s.TrafficRanges, blk.DefRange)
	}
	if sumKnown && sum != 100 {
		d.errorf(blocks[0].DefRange, "Traffic percentages do not sum to 100",
			"The percent of the %d traffic blocks add up to %d; they must add up to 100.", len(blocks), sum)
	}
}

// dnsLabel checks an RFC 1035 label (letter first) or, with letterFirst false, an RFC 1123
// one; it returns what is wrong, or "".
func dnsLabel(s string, letterFirst bool) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxLabel:
		return fmt.Sprintf("is longer than %d characters", maxLabel)
	case letterFirst && (s[0] < 'a' || s[0] > 'z'):
		return "must start with a lowercase letter"
	case s[len(s)-1] == '-':
		return "must not end with a dash"
	case s[0] == '-':
		return "must not start with a dash"
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return "may contain only lowercase letters, digits and dashes"
		}
	}
	return ""
}
