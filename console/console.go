// Package console is `rouse console`: a read-only web console of the platform, served by
// rouse itself. It samples the control plane (through control.Client, as `rouse list` and
// `rouse describe` read it) and the gateways' and scalers' admin listeners (found in Consul)
// every Interval, keeps a short history in memory, and renders it as server-side HTML with
// SVG charts; a small script swaps in a fresh rendering every Interval. It changes nothing.
package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rouse-run/rouse/control"
	"github.com/rouse-run/rouse/internal/clock"
)

// Defaults.
const (
	DefaultListen      = "127.0.0.1:9300"
	DefaultInterval    = 2 * time.Second
	DefaultHistory     = 10 * time.Minute
	DefaultMaxServices = 50
)

// Config is everything the console takes.
type Config struct {
	// Control reads services, revisions, failures and the daemons' addresses; its tokens
	// are the console's (NOMAD_TOKEN, CONSUL_HTTP_TOKEN).
	Control *control.Client
	// Namespace shown; "" = every namespace.
	Namespace string
	// Listen is the HTTP address (DefaultListen; port 0 = any free port).
	Listen string
	// Interval between two samples (DefaultInterval); History is how long they are kept
	// (DefaultHistory).
	Interval, History time.Duration
	// MaxServices bounds the services described each sample (each costs a few Nomad and
	// Consul reads per revision); the rest are listed without revisions.
	MaxServices int
	Clock       clock.Clock // nil = clock.Real
	Logger      *zap.Logger // nil = none
	// AdminHTTP reads the admin listeners (nil: one with 1 s timeouts).
	AdminHTTP *http.Client
}

func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.History <= 0 {
		c.History = DefaultHistory
	}
	if c.MaxServices <= 0 {
		c.MaxServices = DefaultMaxServices
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.AdminHTTP == nil {
		c.AdminHTTP = adminClient()
	}
	return c
}

// Console samples the platform and serves the pages.
type Console struct {
	cfg   Config
	r     reader
	adm   admin
	pages map[string]*template.Template
	ln    net.Listener // nil until New listens

	mu   sync.Mutex
	hist *history
}

// New validates cfg and listens on cfg.Listen; Run serves.
func New(cfg Config) (*Console, error) {
	if cfg.Control == nil {
		return nil, errors.New("console: Config.Control is required")
	}
	c, err := newConsole(cfg, cfg.Control)
	if err != nil {
		return nil, err
	}
	if c.ln, err = net.Listen("tcp", c.cfg.Listen); err != nil {
		return nil, fmt.Errorf("console: listen %s: %w", c.cfg.Listen, err)
	}
	return c, nil
}

// newConsole builds a console on any reader, without listening (the tests' entry).
func newConsole(cfg Config, r reader) (*Console, error) {
	cfg = cfg.withDefaults()
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Console{cfg: cfg, r: r, adm: admin{cfg.AdminHTTP}, pages: pages, hist: newHistory(cfg.History)}, nil
}

// Addr is the address New listens on.
func (c *Console) Addr() string { return c.ln.Addr().String() }

// URL is the console's address as a browser opens it.
func (c *Console) URL() string { return "http://" + c.Addr() + "/" }

// Run samples every Interval and serves until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(c.ln) }()
	c.Sample(ctx)
	t := c.cfg.Clock.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			return nil
		case err := <-errc:
			return fmt.Errorf("console: serve: %w", err)
		case <-t.C():
			c.Sample(ctx)
		}
	}
}

// Sample reads everything once and adds it to the history.
func (c *Console) Sample(parent context.Context) {
	// Bounded, so one agent that hangs delays a sample but never stops the sampling.
	ctx, cancel := context.WithTimeout(parent, max(c.cfg.Interval, 5*time.Second))
	defer cancel()
	o := c.read(ctx)
	if parent.Err() != nil {
		return // stopping: a half sample is no sample
	}
	c.mu.Lock()
	c.hist.add(o)
	c.mu.Unlock()
}

// read is one observation: the control plane, then every daemon, in parallel where it can.
func (c *Console) read(ctx context.Context) observation {
	o := observation{at: c.cfg.Clock.Now()}
	var mu sync.Mutex
	report := func(what string, err error) {
		mu.Lock()
		o.problems = append(o.problems, problemOf(what, err))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		o.services, o.more = c.readServices(ctx, report)
	}()
	go func() {
		defer wg.Done()
		gws, err := c.r.Gateways(ctx)
		if err != nil {
			report("find the gateways (Consul service rouse-gateway)", err)
		}
		o.gateways = make([]gatewayRead, len(gws))
		each(len(gws), 8, func(i int) { o.gateways[i] = c.adm.gateway(ctx, gws[i]) })
		if idx, err := c.r.JournalIndex(ctx); err != nil {
			report("read the route journal's index", err)
		} else {
			o.journal = idx
		}
	}()
	go func() {
		defer wg.Done()
		scs, err := c.r.Scalers(ctx)
		if err != nil {
			report("find the scalers (Consul service "+control.ScalerService+")", err)
		}
		o.scalers = make([]scalerRead, len(scs))
		each(len(scs), 4, func(i int) { o.scalers[i] = c.adm.scaler(ctx, scs[i]) })
		if fs, err := c.r.Failures(ctx, c.cfg.Namespace); err != nil {
			report("read failure records", err)
		} else {
			o.failures = fs
		}
	}()
	wg.Wait()
	sort.Slice(o.problems, func(i, j int) bool { return o.problems[i].What < o.problems[j].What })
	return o
}

func (c *Console) readServices(ctx context.Context, report func(string, error)) ([]serviceRead, int) {
	sums, err := c.r.List(ctx, c.cfg.Namespace)
	if err != nil {
		report("list services", err)
		return nil, 0
	}
	sort.Slice(sums, func(i, j int) bool {
		if sums[i].Namespace != sums[j].Namespace {
			return sums[i].Namespace < sums[j].Namespace
		}
		return sums[i].Name < sums[j].Name
	})
	more := max(0, len(sums)-c.cfg.MaxServices)
	out := make([]serviceRead, len(sums))
	for i, s := range sums {
		out[i].summary = s
	}
	each(min(len(sums), c.cfg.MaxServices), 4, func(i int) {
		s := sums[i]
		d, err := c.r.Describe(ctx, s.Namespace, s.Name)
		if err != nil {
			report("describe "+s.Namespace+"/"+s.Name, err)
			return
		}
		out[i].detail = d
	})
	return out, more
}

// each runs f(0..n-1) with at most par at once.
func each(n, par int, f func(int)) {
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}
