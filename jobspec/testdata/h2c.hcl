# protocol = "h2c" without a readiness block: the check defaults to tcp, since Consul's
# HTTP check speaks HTTP/1.1, which an h2c-only server refuses.
service "stream" {
  command  = "/usr/local/bin/stream"
  protocol = "h2c"
}
