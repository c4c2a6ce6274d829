# Consul ACL rules for the rouse scaler: register itself with the TTL check its leader
# session hangs on, hold the leader lock (a session on one KV key), find the gateways
# whose gauges it reads, and record revisions whose instances fail to start (a failure
# record and, in the same transaction, its entry in the journal every gateway follows).
# Revisions' settings come from their Nomad job meta.

service "rouse-scaler" {
  policy = "write"
}

key "rouse/scaler/leader" {
  policy = "write"
}

key_prefix "rouse/failures/" {
  policy = "write"
}

key_prefix "rouse/journal/" {
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
