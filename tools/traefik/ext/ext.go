// Package ext is Traefik's routing-configuration extension point
// (github.com/traefik/traefik pkg/config/dynamic/ext, MIT), copied unchanged: Traefik's
// go.mod replaces this module with a directory of its repository, which the module proxy's
// zip of github.com/traefik/traefik/v3 leaves out, and the proxy does not serve it alone.
package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}
