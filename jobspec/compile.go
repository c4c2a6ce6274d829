package jobspec

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/rouse-run/rouse/internal/revmeta"
)

// Fixed parts of every revision job.
const (
	// ShutdownDelay is how long Nomad waits between deregistering an instance from Consul
	// and signalling it: the gateway sees the deregistration through a blocking query well
	// within it and stops sending new requests, so scale-down drops none.
	ShutdownDelay = 5 * time.Second

	// A broken revision must surface in seconds, not after Nomad's default of two
	// restarts over 30 minutes: one restart after 1s, then the allocation fails and is
	// rescheduled with an exponential backoff.
	restartAttempts = 1
	restartDelay    = time.Second
	restartInterval = 10 * time.Second
	rescheduleDelay = 5 * time.Second
	rescheduleMax   = 5 * time.Minute

	// The guard task's resources: it only copies bytes between two sockets.
	guardCPU      = 50 // MHz
	guardMemoryMB = 32
)

// RevisionName is the name of the revision of s at generation gen: the spec's
// revision_name, or <name>-<5-digit gen>.
func RevisionName(s *Spec, gen int) string {
	if s.RevisionName != "" {
		return s.RevisionName
	}
	return fmt.Sprintf("%s-%05d", s.Name, gen)
}

// InitialCount is the instance count a new revision of s is registered with:
// max(initial, min). Zero means no instance starts until the first request.
func InitialCount(s *Spec) int { return max(s.Autoscaling.Initial, s.Autoscaling.Min) }

// Compile makes the immutable Nomad job of the revision of s at generation gen, and the
// revision config its job meta carries.
func Compile(s *Spec, gen int) (*nomadapi.Job, revmeta.Config, error) {
	if err := check(s, gen); err != nil {
		return nil, revmeta.Config{}, err
	}
	rev := RevisionName(s, gen)
	if msg := dnsLabel(rev, true); msg != "" {
		return nil, revmeta.Config{}, fmt.Errorf("revision name %q %s", rev, msg)
	}

	cfg := revmeta.Config{
		Service: s.Name, Namespace: s.Namespace, Revision: rev, Generation: gen, SpecHash: s.TemplateHash(),
		Concurrency: s.Concurrency, Timeout: s.Timeout, Autoscaling: s.Autoscaling,
		ResponseStartTimeout: s.ResponseStartTimeout, IdleTimeout: s.IdleTimeout,
	}
	if s.Protocol == revmeta.ProtocolH2C {
		// HTTP/1.1 stays "", so its job meta and KV copy are what they were before protocol.
		cfg.Protocol = revmeta.ProtocolH2C
	}
	// The count Nomad starts the revision at; with initial = 0 and min = 0 that is zero:
	// the revision is registered and routed, and the first request wakes it.
	count := InitialCount(s)

	env := map[string]string{
		"PORT":            "${NOMAD_PORT_" + revmeta.PortLabel + "}",
		"ROUSE_SERVICE":   s.Name,
		"ROUSE_REVISION":  rev,
		"ROUSE_NAMESPACE": s.Namespace,
	}
	for k, v := range s.Env {
		if _, reserved := env[k]; !reserved {
			env[k] = v
		}
	}

	port := nomadapi.Port{Label: revmeta.PortLabel}
	var config map[string]any
	switch s.Driver {
	case "docker":
		image, err := s.RunImage()
		if err != nil {
			return nil, revmeta.Config{}, fmt.Errorf("image: %w", err)
		}
		cfg.Image, cfg.ImageDigest = s.Image, cmp.Or(s.ImageDigest, ImageDigestOf(s.Image))
		config = map[string]any{"image": image}
		if s.Network == NetworkHost {
			// The node's network, as raw_exec has: the app listens on the dynamic port.
			config["network_mode"] = NetworkHost
		} else {
			// Nomad maps a dynamic host port to Port inside the container; NOMAD_PORT_http
			// (so $PORT) is then Port itself.
			port.To = s.Port
			config["ports"] = []string{revmeta.PortLabel}
		}
	default:
		// raw_exec and exec share the node's network: the app listens on the dynamic port.
		config = map[string]any{"command": s.Command}
	}
	if len(s.Args) > 0 {
		config["args"] = append([]string(nil), s.Args...)
	}

	readiness := nomadapi.ServiceCheck{
		Name:     "readiness",
		Type:     s.Readiness.Type,
		Path:     s.Readiness.Path,
		Interval: s.Readiness.Interval,
		Timeout:  s.Readiness.Timeout,
	}
	if s.Readiness.Type == "grpc" {
		// The standard health service for the whole server (grpc_service ""), in plain
		// text: the instance speaks h2c.
		readiness.GRPCUseTLS = false
	}

	var constraints []*nomadapi.Constraint
	for _, c := range s.Constraints {
		constraints = append(constraints, nomadapi.NewConstraint(c.Attribute, c.Operator, c.Value))
	}

	job := &nomadapi.Job{
		ID:          ptr(rev),
		Name:        ptr(rev),
		Namespace:   ptr(s.Namespace),
		Type:        ptr(nomadapi.JobTypeService),
		Datacenters: append([]string(nil), s.Datacenters...),
		Constraints: constraints,
		Meta:        cfg.Meta(),
		TaskGroups: []*nomadapi.TaskGroup{{
			Name:  ptr(revmeta.Group),
			Count: ptr(count),
			// No deployments: a deployment would block Jobs.Scale (nomad#8143), and an
			// immutable revision has nothing to roll.
			Update: &nomadapi.UpdateStrategy{MaxParallel: ptr(0)},
			RestartPolicy: &nomadapi.RestartPolicy{
				Attempts: ptr(restartAttempts),
				Delay:    ptr(restartDelay),
				Interval: ptr(restartInterval),
				Mode:     ptr("fail"),
			},
			ReschedulePolicy: &nomadapi.ReschedulePolicy{
				Unlimited:     ptr(true),
				Delay:         ptr(rescheduleDelay),
				DelayFunction: ptr("exponential"),
				MaxDelay:      ptr(rescheduleMax),
			},
			// Alloc health (which only node drains read, without deployments) from the task
			// states, not the checks: with "checks" each starting allocation's health
			// tracker lists every service and check of the Consul agent twice a second
			// until healthy, and a wake of 100 revisions slowed Nomad's own registration
			// of their services (make bench-wake). The gateway routes on its probe and the
			// Consul check either way.
			Migrate: &nomadapi.MigrateStrategy{HealthCheck: ptr("task_states")},
			Networks: []*nomadapi.NetworkResource{{
				DynamicPorts: []nomadapi.Port{port},
			}},
			Tasks: []*nomadapi.Task{{
				Name:   revmeta.Task,
				Driver: s.Driver,
				Config: config,
				Env:    env,
				Resources: &nomadapi.Resources{
					CPU:         ptr(s.Resources.CPU),
					MemoryMB:    ptr(s.Resources.MemoryMB),
					MemoryMaxMB: optional(s.Resources.MemoryMaxMB),
				},
				// A request admitted just before the signal may run for the whole timeout.
				// (Nomad clients cap this at their max_kill_timeout, 30s by default.)
				KillTimeout: ptr(s.Timeout),
				// Between deregistering the task's service and signalling it (the group's
				// shutdown_delay covers only group services).
				ShutdownDelay: ShutdownDelay,
				Services: []*nomadapi.Service{{
					// On the task, not the group: Nomad registers a group's services when the
					// allocation starts, before the task's container and its network exist, and
					// the gateway's first probe then goes through docker's proxy to a container
					// address that does not answer ARP yet; the node asks again only after its
					// 1 s retransmit time (every container wake took 1.1 s). A task's services
					// register once the task has started.
					Name:      rev,
					Provider:  "consul",
					PortLabel: revmeta.PortLabel,
					// The namespace tag lets the gateway tell same-named revisions of two
					// namespaces apart; the readiness path (or the grpc mark) in meta lets it probe
					// an instance the moment it registers (Consul's API does not return a check's
					// URL, and meta keys may not contain dots).
					Tags:   []string{revmeta.TagRouse, revmeta.TagServicePrefix + s.Name, revmeta.TagNamespacePrefix + s.Namespace},
					Meta:   readinessMeta(s),
					Checks: []nomadapi.ServiceCheck{readiness},
				}},
			}},
		}},
	}
	group := job.TaskGroups[0]
	compileTemplates(s, group.Tasks[0])
	compileVolumes(s, group, group.Tasks[0])
	if err := compileSidecars(s, group); err != nil {
		return nil, revmeta.Config{}, err
	}
	if s.Concurrency > 0 {
		compileGuard(s, job)
	}
	return job, cfg, nil
}

// compileGuard makes a revision with a hard limit (concurrency > 0) enforce it in its own
// group: a `rouse guard` task beside the app, through which the gateways reach it, admits
// at most Concurrency requests to it at once and queues the rest. The limit cannot be
// exact from the gateways alone: a gateway that dies mid-request leaves its request
// running on the instance, and only something on the instance's side, which outlives any
// gateway, knows when it ends (Knative's queue-proxy; see docs/architecture.md,
// "Concurrency across gateways"). With concurrency = 0 nothing here runs, and the job is
// what it was before the guard.
func compileGuard(s *Spec, job *nomadapi.Job) {
	group := job.TaskGroups[0]
	main := group.Tasks[0]
	// The guard's own port, on the node's network like the app's dynamic port.
	group.Networks[0].DynamicPorts = append(group.Networks[0].DynamicPorts, nomadapi.Port{Label: revmeta.GuardPortLabel})
	// Gateways find the instance at the guard's port; Consul's readiness check goes to the
	// app itself and takes no slot (as Knative's queue-proxy probes its user container).
	svc := main.Services[0]
	svc.PortLabel = revmeta.GuardPortLabel
	for i := range svc.Checks {
		svc.Checks[i].PortLabel = revmeta.PortLabel
	}
	// The guard is the node's rouse binary, run by raw_exec: only nodes that say where it is.
	bin := "${meta." + revmeta.GuardBinMeta + "}"
	job.Constraints = append(job.Constraints, nomadapi.NewConstraint(bin, "is_set", ""))
	group.Tasks = append(group.Tasks, &nomadapi.Task{
		Name:   revmeta.GuardTask,
		Driver: "raw_exec",
		Config: map[string]any{
			"command": bin,
			"args": append([]string{
				"guard",
				"--listen", "${NOMAD_ADDR_" + revmeta.GuardPortLabel + "}",
				// The app's port as the node sees it: for an image on the bridge network, the
				// host port Nomad maps to the container's.
				"--upstream", "${NOMAD_HOST_ADDR_" + revmeta.PortLabel + "}",
				"--concurrency", strconv.Itoa(s.Concurrency),
				"--timeout", s.Timeout.String(),
			}, guardProtocol(s)...),
		},
		// Up before the app, and beside it for the instance's life; Nomad stops it after
		// the app.
		Lifecycle: &nomadapi.TaskLifecycle{Hook: nomadapi.TaskLifecycleHookPrestart, Sidecar: true},
		Resources: &nomadapi.Resources{CPU: ptr(guardCPU), MemoryMB: ptr(guardMemoryMB)},
		// On SIGTERM it drains the requests it admitted, each of which may run the timeout.
		KillTimeout:   ptr(s.Timeout),
		ShutdownDelay: main.ShutdownDelay,
	})
}

// guardProtocol is the guard's flag for an h2c app (none for HTTP/1.1).
func guardProtocol(s *Spec) []string {
	if s.Protocol == revmeta.ProtocolH2C {
		return []string{"--h2c"}
	}
	return nil
}

// check rejects what Parse never produces, so a hand-built Spec fails loudly rather than
// compiling to a job Nomad would refuse or misrun.
func check(s *Spec, gen int) error {
	var errs []error
	if s == nil {
		return errors.New("compile: nil spec")
	}
	if gen < 1 {
		errs = append(errs, fmt.Errorf("generation %d: generations start at 1", gen))
	}
	if msg := dnsLabel(s.Name, true); msg != "" {
		errs = append(errs, fmt.Errorf("service name %q %s", s.Name, msg))
	}
	if msg := dnsLabel(s.Namespace, false); msg != "" {
		errs = append(errs, fmt.Errorf("namespace %q %s", s.Namespace, msg))
	}
	switch s.Driver {
	case "docker":
		if s.Image == "" || s.Command != "" {
			errs = append(errs, errors.New("driver docker needs an image and no command"))
		}
		switch s.Network {
		case NetworkHost:
			if s.Port != 0 {
				errs = append(errs, fmt.Errorf("port %d with network host: the app listens on $PORT", s.Port))
			}
		case NetworkBridge, "": // "" is bridge in a hand-built Spec
			if s.Port < 1 || s.Port > 65535 {
				errs = append(errs, fmt.Errorf("port %d out of range", s.Port))
			}
		default:
			errs = append(errs, fmt.Errorf("network %q: want bridge or host", s.Network))
		}
	case "raw_exec", "exec":
		if s.Command == "" || s.Image != "" {
			errs = append(errs, fmt.Errorf("driver %s needs a command and no image", s.Driver))
		}
	default:
		errs = append(errs, fmt.Errorf("unsupported driver %q", s.Driver))
	}
	if s.Timeout < minTimeout || s.Timeout > revmeta.MaxTimeout {
		errs = append(errs, fmt.Errorf("timeout %s out of range", s.Timeout))
	}
	switch s.Protocol {
	case revmeta.ProtocolHTTP1, revmeta.ProtocolH2C, "": // "" is http1 in a hand-built Spec
	default:
		errs = append(errs, fmt.Errorf("protocol %q: want %s or %s", s.Protocol, revmeta.ProtocolHTTP1, revmeta.ProtocolH2C))
	}
	switch s.Readiness.Type {
	case "http", "tcp":
	case "grpc":
		if s.Protocol != revmeta.ProtocolH2C {
			errs = append(errs, errors.New("readiness type grpc needs protocol h2c"))
		}
		if s.Readiness.Path != "" {
			errs = append(errs, fmt.Errorf("readiness path %q: a grpc check has none", s.Readiness.Path))
		}
	default:
		errs = append(errs, fmt.Errorf("readiness type %q", s.Readiness.Type))
	}
	if err := s.Autoscaling.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkTemplates(s)...) // templates.go
	errs = append(errs, checkVolumes(s)...)   // volumes.go
	return errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }

// optional is nil for zero, for Nomad fields where unset differs from 0.
func optional(v int) *int {
	if v == 0 {
		return nil
	}
	return &v
}

// readinessMeta is the Consul service meta the gateway probes waking instances with.
func readinessMeta(s *Spec) map[string]string {
	switch s.Readiness.Type {
	case "tcp":
		return nil
	case "grpc":
		return map[string]string{revmeta.MetaReadinessGRPC: "true"}
	}
	return map[string]string{revmeta.MetaReadinessPath: s.Readiness.Path}
}
