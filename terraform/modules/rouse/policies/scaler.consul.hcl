# Consul ACL rules for the rouse scaler: register itself with the TTL check its leader
# session hangs on, hold the leader lock (a session on one KV key), and find the gateways
# whose gauges it reads. It needs nothing else from KV: revisions' settings come from
# their Nomad job meta.

service "rouse-scaler" {
  policy = "write"
}

key "rouse/scaler/leader" {
  policy = "write"
}

session_prefix "" {
  policy = "write"
}

service "rouse-gateway" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
