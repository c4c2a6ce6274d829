# Consul ACL rules for the rouse gateway: read routes (KV) and every instance's health,
# register itself as rouse-gateway so scalers and peer gateways find its admin listener.

service "rouse-gateway" {
  policy = "write"
}

key_prefix "rouse/" {
  policy = "read"
}

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
