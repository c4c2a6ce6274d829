# A hard concurrency limit: the rouse-guard task in the group, the service on its port.
service "guarded" {
  command     = "/usr/local/bin/guarded"
  protocol    = "h2c"
  concurrency = 2
  timeout     = "30s"

  readiness {
    type = "grpc"
  }

  sidecar "log-agent" {
    command   = "/usr/local/bin/log-agent"
    lifecycle = "poststart"
  }
}
