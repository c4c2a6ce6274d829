// Package certs holds the gateway's TLS certificates: it loads them from files, picks one
// per handshake by SNI, and reloads them when the files change, without a restart.
//
//	st, err := certs.New(certs.Options{Dir: "/etc/rouse/tls", Logger: log})
//	go st.Run(ctx)                    // poll the files (every 2s by default)
//	cfg.TLS = st.TLSConfig()          // gateway.Config.TLS
//	// on SIGHUP: st.Reload()
//
// # Where certificates come from
//
// Options.Files lists pairs by path. Options.Dir is a directory read with two conventions,
// both at once:
//
//	<dir>/<name>.crt + <dir>/<name>.key           a flat directory of pairs
//	<dir>/<name>/tls.crt + <dir>/<name>/tls.key   one subdirectory per pair (Kubernetes TLS Secret keys)
//
// The second is what a Kubernetes TLS Secret mounted as a volume looks like, and a
// Secret mounted straight at Dir (Dir/tls.crt + Dir/tls.key) is the first one with
// <name> "tls". Names starting with "." are skipped (Kubernetes' ..data links, editors'
// swap files), and so is a subdirectory with neither tls.crt nor tls.key, and every other
// file (.pem files included: one convention, no guessing). Half a pair — a .crt without
// its .key or the other way round — is an error, as it usually means a copy in progress.
// Symbolic links are followed.
//
// A .crt (tls.crt) file holds PEM CERTIFICATE blocks: the leaf first, then any
// intermediates, which are sent to clients as they are. A .key file holds the leaf's
// private key in PEM (PKCS #1, PKCS #8 or SEC 1).
//
// # Which certificate a handshake gets
//
// The names a certificate serves are its DNS subject alternative names, lower-cased; the
// subject's common name is ignored (as browsers and Go's verifier ignore it), and so are IP
// SANs: SNI never carries an IP address (RFC 6066), so a client dialling an IP gets the
// default certificate. A SAN "*.<rest>" is a wildcard for exactly one label (RFC 6125):
// "*.default.example.com" serves "a.default.example.com", not "a.b.default.example.com" and
// not "default.example.com". Partial wildcards ("a*.example.com") are not supported.
//
// For a handshake's SNI, compared case-insensitively and without a trailing dot, the
// candidates are the certificates naming it exactly, then those whose wildcard covers
// it. Among them the first is taken that the client can use (its signature algorithms
// and curves), then that is valid now (by Options.Clock), then that names the host
// exactly, then whose NotAfter is latest. So an expired exact certificate gives way to a
// valid wildcard one, and during a renewal the new certificate wins as soon as it is
// valid.
//
// With no SNI, or a name no certificate serves, the handshake gets the default
// certificate: the first pair of Options.Files, or, without Files, the first pair in Dir
// in byte order of <name> (flat pairs and subdirectories sorted together). Clients that
// dial an IP or a name the gateway does not know still complete a handshake.
//
// # Reloading
//
// Run polls every Options.Reload: it reads every file of the set and the directory
// listing, and when their content (a SHA-256 over paths and bytes) differs from the set
// being served, it loads the whole new set and swaps it in at once. If the new set is
// broken — a file half written, a key that does not match its certificate, a pair half
// copied — the old set stays, the error is logged (once, not at every poll), and the next
// poll tries again; a broken set is never served. Reload does the same at once (for
// SIGHUP) and returns the error. Connections already open keep the certificate they
// were handshaken with: TLS picks a certificate once per handshake.
package certs
