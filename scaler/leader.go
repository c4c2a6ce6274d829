package scaler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/rouse-run/rouse/internal/clock"
)

// elector is leader election among scaler replicas.
type elector interface {
	// Campaign blocks until this replica leads (lost is closed when it stops leading) or
	// ctx ends (nil, ctx.Err()).
	Campaign(ctx context.Context) (lost <-chan struct{}, err error)
	// Resign gives the lead up at once, so a standby takes over without waiting for a TTL.
	Resign()
	// Close releases everything (deregisters the liveness check).
	Close()
}

// consulElector leads through a Consul lock held by a session tied to two things: a TTL
// the session renews, and a TTL health check this process passes every second. A replica
// that dies stops passing its check, Consul invalidates the session within CheckTTL, and
// a standby acquires the lock after LockDelay: takeover in about CheckTTL + LockDelay
// (+ Consul's 5 s lock retry), under 15 s. A session TTL alone would take up to 2 × TTL,
// because Consul doubles session TTLs before expiring them.
type consulElector struct {
	c                   *consulapi.Client
	log                 *zap.Logger
	clock               clock.Clock
	key, id, serviceID  string
	sessionTTL          time.Duration
	checkTTL, lockDelay time.Duration
	adminHost           string
	adminPort           int

	mu      sync.Mutex
	checkID string // "" when registration failed: session TTL only
	session string
	lock    *consulapi.Lock
	stop    chan struct{} // stops the session renewal
	beat    context.CancelFunc
}

var _ elector = (*consulElector)(nil)

// register adds this replica as service rouse-scaler (its admin address, for discovery)
// with the TTL check the session hangs on, and starts passing it.
func (e *consulElector) register(ctx context.Context) {
	checkID := e.serviceID + ":alive"
	reg := &consulapi.AgentServiceRegistration{
		ID: e.serviceID, Name: "rouse-scaler", Address: e.adminHost, Port: e.adminPort,
		Meta: map[string]string{"replica": e.id},
		Check: &consulapi.AgentServiceCheck{
			CheckID: checkID, Name: "rouse scaler alive", TTL: e.checkTTL.String(), Status: consulapi.HealthPassing,
			DeregisterCriticalServiceAfter: "1m",
		},
	}
	if err := e.c.Agent().ServiceRegisterOpts(reg, consulapi.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		e.log.Warn("could not register the scaler's liveness check in Consul; leadership falls back to the session TTL, so a crashed leader is replaced after up to 2×TTL",
			zap.Error(err))
		return
	}
	e.checkID = checkID
	bctx, cancel := context.WithCancel(context.Background())
	e.beat = cancel
	go func() {
		t := e.clock.NewTicker(e.checkTTL / 5)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-bctx.Done():
				return
			case <-t.C():
			}
			q := (&consulapi.QueryOptions{}).WithContext(bctx)
			err := e.c.Agent().UpdateTTLOpts(checkID, "", consulapi.HealthPassing, q)
			if err != nil && bctx.Err() == nil {
				// The agent may have lost the registration (restarted without its data):
				// register again. The session dies with the check either way, and this
				// replica campaigns again with the new one.
				err = e.c.Agent().ServiceRegisterOpts(reg, consulapi.ServiceRegisterOpts{}.WithContext(bctx))
			}
			switch {
			case err != nil && !failing && bctx.Err() == nil:
				failing = true
				e.log.Warn("liveness check update failed; this replica will lose or not win the lead until it works", zap.Error(err))
			case err == nil && failing:
				failing = false
				e.log.Info("liveness check passing again")
			}
		}
	}()
}

func (e *consulElector) Campaign(ctx context.Context) (<-chan struct{}, error) {
	e.mu.Lock()
	if e.beat == nil && e.checkID == "" {
		e.register(ctx)
	}
	e.mu.Unlock()
	se := &consulapi.SessionEntry{
		Name: "rouse-scaler " + e.id, TTL: e.sessionTTL.String(), LockDelay: e.lockDelay,
		Behavior: consulapi.SessionBehaviorRelease, NodeChecks: []string{"serfHealth"},
	}
	if e.checkID != "" {
		se.ServiceChecks = []consulapi.ServiceCheck{{ID: e.checkID}}
	}
	id, _, err := e.c.Session().Create(se, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul session: %w", err)
	}
	stop := make(chan struct{})
	go func() {
		// Renewal ends when the session is gone; the lock's monitor notices that too.
		if err := e.c.Session().RenewPeriodic(se.TTL, id, nil, stop); err != nil && !errors.Is(err, consulapi.ErrSessionExpired) {
			e.log.Warn("consul session renewal stopped", zap.Error(err))
		}
	}()
	lock, err := e.c.LockOpts(&consulapi.LockOptions{
		Key: e.key, Value: []byte(e.id), Session: id,
		MonitorRetries: 3, MonitorRetryTime: time.Second,
	})
	if err != nil {
		close(stop)
		e.destroy(id)
		return nil, err
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil || lost == nil {
		close(stop)
		e.destroy(id)
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	e.mu.Lock()
	e.session, e.lock, e.stop = id, lock, stop
	e.mu.Unlock()
	return lost, nil
}

func (e *consulElector) Resign() {
	e.mu.Lock()
	lock, id, stop := e.lock, e.session, e.stop
	e.lock, e.session, e.stop = nil, "", nil
	e.mu.Unlock()
	if lock == nil {
		return
	}
	if err := lock.Unlock(); err != nil && !errors.Is(err, consulapi.ErrLockNotHeld) {
		e.log.Warn("releasing the leader lock", zap.Error(err))
	}
	close(stop)
	e.destroy(id)
}

func (e *consulElector) destroy(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := e.c.Session().Destroy(id, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
		e.log.Debug("destroying the consul session", zap.Error(err))
	}
}

func (e *consulElector) Close() {
	e.Resign()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.beat != nil {
		e.beat()
		e.beat = nil
	}
	if e.checkID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := e.c.Agent().ServiceDeregisterOpts(e.serviceID, (&consulapi.QueryOptions{}).WithContext(ctx)); err != nil {
			e.log.Debug("deregistering the scaler service", zap.Error(err))
		}
		e.checkID = ""
	}
}

// adminHostPort is the admin address's host and port for the service registration; an
// unspecified host lets Consul use the node's address.
func adminHostPort(addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0
	}
	port, _ := strconv.Atoi(p)
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		h = ""
	}
	return h, port
}
