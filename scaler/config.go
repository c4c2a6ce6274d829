package scaler

import (
	"os"
	"strconv"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
)

// Defaults for Config's zero values.
const (
	DefaultTick           = 2 * time.Second
	DefaultGatewayService = "rouse-gateway"
	DefaultLeaderKey      = "rouse/scaler/leader"
	DefaultSessionTTL     = 10 * time.Second
	DefaultCheckTTL       = 5 * time.Second
	DefaultLockDelay      = time.Millisecond
	DefaultGatewayTimeout = time.Second
	DefaultParallelScales = 16
	DefaultMaxNomadConns  = 64
)

// Config is everything `rouse scaler` takes.
type Config struct {
	Nomad  *nomadapi.Client  // required
	Consul *consulapi.Client // required
	Logger *zap.Logger       // nil: no logs
	Clock  clock.Clock       // nil: the wall clock

	// Tick is how often the leader reads gauges and decides. Default 2 s.
	Tick time.Duration
	// AdminAddr is the listener for /metrics, /healthz and /decisions ("" = none;
	// ":0" picks a free port, see Scaler.AdminAddr).
	AdminAddr string
	// Namespaces are the Nomad namespaces whose revisions are scaled. Default ["*"]: all.
	Namespaces []string
	// ID names this replica in logs, the lock value and Nomad's scaling events.
	// Default hostname-pid.
	ID string

	GatewayService string        // Consul service of the gateways' admin listeners. Default rouse-gateway.
	GatewayTimeout time.Duration // per /gauges read. Default 1 s.
	LeaderKey      string        // Consul KV key of the leader lock. Default rouse/scaler/leader.
	SessionTTL     time.Duration // the leader session's TTL. Default 10 s.
	CheckTTL       time.Duration // the liveness check a crashed leader stops passing. Default 5 s.
	LockDelay      time.Duration // Consul lock-delay after a leader's session dies. Default 1 ms: Consul's own 15 s default would push takeover past 15 s.
	ParallelScales int           // Jobs.Scale / count reads in flight at once. Default 16.
	// MaxNomadConns bounds the requests in flight to Nomad, blocking queries included: under
	// Nomad's limits.http_max_conns_per_client (default 100), which counts every connection
	// from the scaler's address. Default 64.
	MaxNomadConns int
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Tick <= 0 {
		c.Tick = DefaultTick
	}
	if len(c.Namespaces) == 0 {
		c.Namespaces = []string{"*"}
	}
	if c.ID == "" {
		h, _ := os.Hostname()
		c.ID = h + "-" + strconv.Itoa(os.Getpid())
	}
	if c.GatewayService == "" {
		c.GatewayService = DefaultGatewayService
	}
	if c.GatewayTimeout <= 0 {
		c.GatewayTimeout = min(DefaultGatewayTimeout, c.Tick/2)
	}
	if c.LeaderKey == "" {
		c.LeaderKey = DefaultLeaderKey
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.CheckTTL <= 0 {
		c.CheckTTL = DefaultCheckTTL
	}
	if c.LockDelay <= 0 {
		c.LockDelay = DefaultLockDelay
	}
	if c.ParallelScales <= 0 {
		c.ParallelScales = DefaultParallelScales
	}
	if c.MaxNomadConns <= 0 {
		c.MaxNomadConns = DefaultMaxNomadConns
	}
	return c
}
