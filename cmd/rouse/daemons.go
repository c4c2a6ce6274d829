package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/gateway/certs"
	"github.com/rouse-run/rouse/scaler"
)

// newLogger is the daemons' JSON logger on stderr (Nomad captures it as the task's log).
func newLogger(o *rootOptions, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, usagef("--log-level %q: one of debug, info, warn, error", level)
	}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(logEncoding()), zapcore.AddSync(o.Stderr), lvl)
	return zap.New(core), nil
}

func logEncoding() zapcore.EncoderConfig {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	return enc
}

// newAccessLog is the gateway's access log: the same JSON on stderr, buffered (256 KiB or
// one second, and on stop) because a write per request was a syscall per request, and on
// Nomad a wake-up of the log collector too. stop flushes it.
func newAccessLog(o *rootOptions) (log *zap.Logger, stop func()) {
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(o.Stderr), Size: 256 << 10, FlushInterval: time.Second}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(logEncoding()), ws, zap.InfoLevel)
	return zap.New(core).Named("gateway.access"), func() { _ = ws.Stop() }
}

// gatewayCerts loads the gateway's certificates: one pair, a folder of them, or both (the
// pair is then the default for clients that send no matching name).
func gatewayCerts(cert, key, dir string, shared certs.Shared, log *zap.Logger) (*certs.Store, error) {
	if (cert == "") != (key == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	o := certs.Options{Dir: dir, Shared: shared, Logger: log}
	if cert != "" {
		o.Files = []certs.Pair{{CertFile: cert, KeyFile: key}}
	}
	return certs.New(o)
}

// reloadOnSIGHUP calls reload on each SIGHUP until the returned stop is called.
func reloadOnSIGHUP(reload func() error) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				_ = reload() // a bad set keeps the old one; certs logs why
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

func newGatewayCmd(o *rootOptions) *cobra.Command {
	var (
		cfg       gateway.Config
		logLevel  string
		accessLog bool
		tlsCert   string
		tlsKey    string
		tlsDir    string
		tlsConsul string
		h2cUp     bool
		otlp      string
		sample    float64
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the public gateway: host routing, traffic split, activation from zero",
		Long: `The gateway serves every service at http://<service>.<namespace>.<domain> (and tags at
http://<tag>-<service>.<namespace>.<domain>). It reads routes from Consul KV and instances from
Consul health with blocking queries, holds requests for revisions scaled to zero while they
wake, and serves gauges and Prometheus metrics on its admin listener. SIGTERM drains.

With --internal-listen (an address on the cluster network) it also serves every service at
http://<service>.<namespace>.<internal-domain> there, and services with visibility =
"internal" only there: the public listener answers 404 for them, as for an unknown host.

It needs Consul only (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN with key:read on rouse/ and
service:read; service:write for --register).`,
		Example: `  rouse gateway --listen :80 --domain example.com
  rouse gateway --listen :8080 --admin-listen 10.0.0.5:9090`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(o, logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			_, cc, err := o.apiClients()
			if err != nil {
				return err
			}
			cfg.Consul, cfg.Domain, cfg.Logger = cc, o.Domain, log.Named("gateway")
			cfg.InternalDomain = o.InternalDomain
			cfg.AccessLog = zap.NewNop()
			if accessLog {
				var stop func()
				cfg.AccessLog, stop = newAccessLog(o)
				defer stop()
			}
			cfg.NoH2CUpgrade = !h2cUp
			if otlp != "" {
				tp, stop, err := gatewayTracer(otlp, sample, cfg.ID)
				if err != nil {
					return err
				}
				defer stop()
				cfg.TracerProvider = tp
			}
			scheme := "http"
			if tlsCert != "" || tlsKey != "" || tlsDir != "" || tlsConsul != "" {
				var shared certs.Shared
				if tlsConsul != "" {
					shared = certs.ConsulKV(cc, tlsConsul)
				}
				st, err := gatewayCerts(tlsCert, tlsKey, tlsDir, shared, log.Named("certs"))
				if err != nil {
					return err
				}
				go st.Run(cmd.Context())
				stopHUP := reloadOnSIGHUP(st.Reload)
				defer stopHUP()
				cfg.TLS, scheme = st.TLSConfig(), "https"
				log.Info("serving TLS", zap.Strings("names", st.Names()))
			} else if cfg.RedirectAddr != "" {
				return usagef("--redirect-listen sends clients to https: it needs --tls-cert/--tls-key, --tls-dir or --tls-consul-prefix")
			}
			g, err := gateway.New(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Stderr, "rouse gateway: serving %s://*.%s on %s, admin on http://%s\n", scheme, o.Domain, g.PublicAddr(), g.AdminAddr())
			if a := g.InternalAddr(); a != "" {
				fmt.Fprintf(o.Stderr, "rouse gateway: serving http://*.%s (and internal services) on %s\n", o.InternalDomain, a)
			}
			if a := g.RedirectAddr(); a != "" {
				fmt.Fprintf(o.Stderr, "rouse gateway: redirecting http:// on %s to https (308)\n", a)
			}
			return g.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.PublicAddr, "listen", envOr(o.Getenv, "ROUSE_GATEWAY_LISTEN", ":8080"), "public listener (env ROUSE_GATEWAY_LISTEN)")
	f.StringVar(&cfg.InternalAddr, "internal-listen", envOr(o.Getenv, "ROUSE_GATEWAY_INTERNAL_LISTEN", ""), "internal listener, for the cluster network: plain HTTP, every service under --internal-domain, internal services only here (default none; env ROUSE_GATEWAY_INTERNAL_LISTEN)")
	f.StringVar(&cfg.AdminAddr, "admin-listen", envOr(o.Getenv, "ROUSE_GATEWAY_ADMIN", "127.0.0.1:9090"), "admin listener: gauges for the scaler, /metrics, /routes (env ROUSE_GATEWAY_ADMIN)")
	f.StringVar(&cfg.ID, "id", "", "name of this gateway in gauges and Consul (default <hostname>-<port>)")
	f.BoolVar(&cfg.Register, "register", true, `register in Consul as "rouse-gateway" so scalers find this gateway`)
	f.DurationVar(&cfg.ActivationTimeout, "activation-timeout", 60*time.Second, "how long a request waits for a revision to wake")
	f.IntVar(&cfg.MaxHeld, "max-held", 1000, "requests held per waking revision")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "how long SIGTERM waits for in-flight requests")
	f.BoolVar(&cfg.TrustForwarded, "trust-forwarded", false, "keep clients' X-Forwarded-Proto/-Host (behind a trusted proxy)")
	f.BoolVar(&accessLog, "access-log", true, "log one JSON line per request")
	f.StringVar(&tlsCert, "tls-cert", "", "serve the public listener over TLS with this certificate (PEM, chain included); with --tls-key")
	f.StringVar(&tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
	f.StringVar(&tlsDir, "tls-dir", "", "serve TLS with every pair in this folder (<name>.crt + <name>.key, or <name>/tls.crt + tls.key), chosen by SNI; reloaded when files change or on SIGHUP")
	f.StringVar(&tlsConsul, "tls-consul-prefix", "", "serve TLS with the pairs in Consul KV under this prefix (<prefix><name>/tls.crt + tls.key), shared by every gateway; needs key:read on it; polled every 2s")
	f.StringVar(&cfg.RedirectAddr, "redirect-listen", "", "with TLS: a plain-HTTP listener that answers every request 308 to https")
	f.BoolVar(&h2cUp, "h2c-upgrade", true, "answer HTTP/1.1 requests with Upgrade: h2c by switching to HTTP/2 (turn off behind a proxy that tunnels upgrades)")
	f.StringVar(&otlp, "otlp-endpoint", envOr(o.Getenv, "ROUSE_OTLP_ENDPOINT", ""), "trace requests: send spans to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (default off; env ROUSE_OTLP_ENDPOINT)")
	f.Float64Var(&sample, "trace-sample-ratio", 0.1, "with --otlp-endpoint: the share of traces the gateway starts that it samples (a client's traceparent decides for its own)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func newScalerCmd(o *rootOptions) *cobra.Command {
	var (
		cfg        scaler.Config
		namespaces string
		logLevel   string
	)
	cmd := &cobra.Command{
		Use:   "scaler",
		Short: "Run the autoscaler: Knative's KPA over the gateways' gauges, counts set in Nomad",
		Long: `The scaler reads every gateway's concurrency gauges, decides each revision's instance
count with Knative's KPA (stable and panic windows, scale to zero after the grace period)
and sets it with Nomad's Jobs.Scale. Replicas elect a leader through a Consul lock; only
the leader scales.

It needs Nomad (NOMAD_ADDR, NOMAD_TOKEN with read-job and scale-job) and Consul
(CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN with key:write on rouse/scaler/, rouse/failures/ and
rouse/journal/, session:write,
service:read).`,
		Example: `  rouse scaler
  rouse scaler --namespaces default,shop --admin-listen 127.0.0.1:9091`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(o, logLevel)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			nc, cc, err := o.apiClients()
			if err != nil {
				return err
			}
			cfg.Nomad, cfg.Consul, cfg.Logger = nc, cc, log.Named("scaler")
			for _, ns := range strings.Split(namespaces, ",") {
				if ns = strings.TrimSpace(ns); ns != "" {
					cfg.Namespaces = append(cfg.Namespaces, ns)
				}
			}
			s, err := scaler.New(cfg)
			if err != nil {
				return err
			}
			if a := s.AdminAddr(); a != "" {
				fmt.Fprintf(o.Stderr, "rouse scaler: admin on http://%s\n", a)
			}
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AdminAddr, "admin-listen", envOr(o.Getenv, "ROUSE_SCALER_ADMIN", "127.0.0.1:9091"), `admin listener: /metrics, /healthz, /decisions ("" = none; env ROUSE_SCALER_ADMIN)`)
	f.StringVar(&namespaces, "namespaces", "*", "comma-separated Nomad namespaces to scale (* = all)")
	f.DurationVar(&cfg.Tick, "tick", 2*time.Second, "how often the leader decides")
	f.StringVar(&cfg.ID, "id", "", "name of this replica (default <hostname>-<pid>)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
