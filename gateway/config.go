package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"net"
	"os"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
)

// Config is everything a gateway needs. Zero values take the defaults documented on each
// field.
type Config struct {
	// PublicAddr is where clients connect (default ":8080"; ":0" picks a free port).
	PublicAddr string
	// AdminAddr serves /gauges, /activations, /metrics, /healthz and /routes (default
	// "127.0.0.1:9090": loopback, so only what runs on this host can read it). Scalers on
	// other hosts need it on a reachable address.
	AdminAddr string
	// Domain is the public domain: <svc>.<ns>.<Domain> (default "localhost").
	Domain string

	// Consul is the client for the routes (KV) and the endpoints (health). Required.
	Consul *consulapi.Client
	// Logger gets the gateway's own logs (default: none).
	Logger *zap.Logger
	// AccessLog gets one JSON line per request (default: Logger named "access"; pass
	// zap.NewNop() to turn it off).
	AccessLog *zap.Logger
	// TracerProvider, when set, turns tracing on: a span per routed request, continuing
	// the client's W3C traceparent, and the instance told the gateway's span (trace.go).
	// Nil is off, at no cost to the request path.
	TracerProvider trace.TracerProvider
	// Clock is the time source (default: the wall clock).
	Clock clock.Clock
	// Registry receives the gateway's Prometheus metrics (default: a new registry with the
	// Go and process collectors), served on the admin /metrics.
	Registry *prometheus.Registry

	// ID names this gateway in gauges and in Consul (default "<hostname>-<public port>").
	ID string
	// Register registers the gateway in Consul as service "rouse-gateway" at the admin
	// listener's address, with an HTTP check on /healthz, so scalers find it and gateways
	// count each other to share per-instance limits. Deregistered on shutdown.
	Register bool

	// ActivationTimeout bounds how long a request is held for a revision with no ready
	// instance (default 60s; never more than the revision's own timeout).
	ActivationTimeout time.Duration
	// MaxHeld bounds, per revision, the requests held while it has no ready instance, and
	// the queue of a revision whose target burst capacity is -1 (default 1000).
	MaxHeld int
	// DrainTimeout bounds the wait for in-flight requests after Run's context ends
	// (default 30s).
	DrainTimeout time.Duration

	// MaxHeaderBytes bounds the request line plus headers (default 32 KiB); more gets 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body (default 4 GiB, negative = unbounded); more gets
	// 413. Bodies stream: a large body is never held in memory.
	MaxBodyBytes int64
	// ReadTimeout bounds reading a request's headers, and each pause while reading its
	// body (default 10s) — slow clients cannot hold connections.
	ReadTimeout time.Duration
	// WriteTimeout bounds each pause while writing a response to a client (default 60s).
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle that long (default 90s).
	IdleTimeout time.Duration
	// MaxConns bounds concurrent client connections (default 100 000).
	MaxConns int
	// TrustForwarded keeps X-Forwarded-Proto/-Host a client sent (set it when a trusted
	// proxy or load balancer sits in front); by default the gateway sets them itself.
	TrustForwarded bool

	// TLS, when set, serves the public listener over TLS with it (gateway/certs builds
	// one: certificates chosen by SNI, reloaded when their files change); nil serves plain
	// HTTP. Its MinVersion is raised to TLS 1.2 and NextProtos defaults to h2, http/1.1.
	TLS *tls.Config
	// NoH2CUpgrade declines HTTP/1.1 requests with Upgrade: h2c on the plain listener
	// (they are then served as HTTP/1.1); by default the gateway answers 101 and serves
	// the connection as HTTP/2. Set it when a proxy in front tunnels upgrades it does not
	// understand: such a proxy would then pass a client's HTTP/2 through unseen (h2c
	// smuggling). Prior-knowledge h2c and h2 over TLS are unaffected.
	NoH2CUpgrade bool
	// RedirectAddr, with TLS, is a plain-HTTP listener that answers every request 308 to
	// the same host and target over https (default: none).
	RedirectAddr string

	// InternalAddr is the internal listener, meant for the cluster network (default: none).
	// It serves plain HTTP (HTTP/1.1 and h2c) for every service at
	// <svc>.<ns>.<InternalDomain>, internal ones (visibility = "internal", Knative's
	// cluster-local) only there, and public services at their public host too. The public
	// listener answers 404 for an internal service, as for an unknown host.
	InternalAddr string
	// InternalDomain is the internal listener's domain (default "internal"); it must
	// differ from Domain.
	InternalDomain string
}

const (
	defaultPublicAddr        = ":8080"
	defaultAdminAddr         = "127.0.0.1:9090"
	defaultDomain            = "localhost"
	defaultInternalDomain    = "internal"
	defaultActivationTimeout = 60 * time.Second
	defaultMaxHeld           = 1000
	defaultDrainTimeout      = 30 * time.Second
	defaultMaxHeaderBytes    = 32 << 10
	defaultMaxBodyBytes      = 4 << 30
	defaultReadTimeout       = 10 * time.Second
	defaultWriteTimeout      = 60 * time.Second
	defaultIdleTimeout       = 90 * time.Second
	defaultMaxConns          = 100000
)

func (c Config) withDefaults() (Config, error) {
	if c.Consul == nil {
		return c, errors.New("gateway: Config.Consul is required")
	}
	if c.PublicAddr == "" {
		c.PublicAddr = defaultPublicAddr
	}
	if c.RedirectAddr != "" && c.TLS == nil {
		return c, errors.New("gateway: Config.RedirectAddr redirects to https and needs Config.TLS")
	}
	if c.TLS != nil {
		t := c.TLS.Clone() // the caller's config stays as it was
		t.MinVersion = max(t.MinVersion, tls.VersionTLS12)
		if len(t.NextProtos) == 0 {
			t.NextProtos = []string{"h2", "http/1.1"}
		}
		c.TLS = t
	}
	if c.AdminAddr == "" {
		c.AdminAddr = defaultAdminAddr
	}
	c.Domain = strings.ToLower(strings.Trim(c.Domain, "."))
	if c.Domain == "" {
		c.Domain = defaultDomain
	}
	c.InternalDomain = strings.ToLower(strings.Trim(c.InternalDomain, "."))
	if c.InternalDomain == "" {
		c.InternalDomain = defaultInternalDomain
	}
	if c.InternalAddr != "" && c.InternalDomain == c.Domain {
		return c, fmt.Errorf("gateway: the internal domain %q must differ from the public domain", c.InternalDomain)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.AccessLog == nil {
		c.AccessLog = c.Logger.Named("access")
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.ActivationTimeout <= 0 {
		c.ActivationTimeout = defaultActivationTimeout
	}
	if c.MaxHeld <= 0 {
		c.MaxHeld = defaultMaxHeld
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = defaultDrainTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = defaultMaxHeaderBytes
	}
	if c.MaxHeaderBytes < 1024 {
		return c, fmt.Errorf("gateway: MaxHeaderBytes %d is below 1 KiB", c.MaxHeaderBytes)
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = defaultMaxBodyBytes
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = defaultMaxConns
	}
	return c, nil
}

func defaultID(publicAddr net.Addr) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "gateway"
	}
	if ta, ok := publicAddr.(*net.TCPAddr); ok {
		return fmt.Sprintf("%s-%d", host, ta.Port)
	}
	return host
}
