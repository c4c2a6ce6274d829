// gatewayd runs one gateway as its own process, for the SIGTERM test and the benchmark
// (the product binary is `rouse gateway`). It exits 0 after draining on SIGTERM/SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rouse-run/rouse/gateway"
	"github.com/rouse-run/rouse/gateway/certs"
)

func main() {
	consulAddr := flag.String("consul", "127.0.0.1:8500", "Consul HTTP address")
	public := flag.String("public", ":8080", "public listen address")
	admin := flag.String("admin", "127.0.0.1:9090", "admin listen address")
	domain := flag.String("domain", "localhost", "public domain")
	id := flag.String("id", "", "gateway ID")
	register := flag.Bool("register", false, "register in Consul as rouse-gateway")
	accessLog := flag.String("access-log", "", "access log file (buffered JSON); empty = stderr; off = none")
	drain := flag.Duration("drain-timeout", 30*time.Second, "drain bound")
	activation := flag.Duration("activation-timeout", 60*time.Second, "activation timeout")
	readTimeout := flag.Duration("read-timeout", 0, "read timeout (0 = default)")
	addrFile := flag.String("addr-file", "", "write 'public admin' addresses here once listening")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here until exit")
	tlsCert := flag.String("tls-cert", "", "serve the public listener over TLS with this certificate (PEM); with -tls-key")
	tlsKey := flag.String("tls-key", "", "the private key of -tls-cert (PEM)")
	tlsTickets := flag.Bool("tls-session-tickets", true, "issue TLS session tickets (Go's default); false: every handshake is a full one")
	flag.Parse()
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(os.Stderr, "gatewayd: -tls-cert and -tls-key go together")
		os.Exit(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}

	log, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	access := log.Named("access")
	var flush func()
	switch *accessLog {
	case "off":
		access = zap.NewNop()
	case "":
	default:
		f, err := os.OpenFile(*accessLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatal("access log", zap.Error(err))
		}
		ws := &zapcore.BufferedWriteSyncer{WS: f, Size: 256 << 10, FlushInterval: time.Second}
		flush = func() { _ = ws.Stop() }
		access = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), ws, zap.InfoLevel))
	}
	cc := consulapi.DefaultConfig()
	cc.Address = *consulAddr
	consul, err := consulapi.NewClient(cc)
	if err != nil {
		log.Fatal("consul client", zap.Error(err))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := gateway.Config{
		PublicAddr: *public, AdminAddr: *admin, Domain: *domain, Consul: consul, Logger: log, AccessLog: access,
		ID: *id, Register: *register, DrainTimeout: *drain, ActivationTimeout: *activation, ReadTimeout: *readTimeout,
	}
	if *tlsCert != "" {
		// As `rouse gateway --tls-cert/--tls-key` does: the certs store, polled for changes.
		st, err := certs.New(certs.Options{Files: []certs.Pair{{CertFile: *tlsCert, KeyFile: *tlsKey}}, Logger: log.Named("certs")})
		if err != nil {
			log.Fatal("tls", zap.Error(err))
		}
		go st.Run(ctx)
		cfg.TLS = st.TLSConfig()
		cfg.TLS.SessionTicketsDisabled = !*tlsTickets
	}
	g, err := gateway.New(cfg)
	if err != nil {
		log.Fatal("gateway", zap.Error(err))
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile, []byte(g.PublicAddr()+" "+g.AdminAddr()+"\n"), 0o644); err != nil {
			log.Fatal("addr file", zap.Error(err))
		}
	}
	err = g.Run(ctx)
	if flush != nil {
		flush()
	}
	_ = log.Sync()
	if err != nil {
		log.Error("gateway stopped", zap.Error(err))
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
