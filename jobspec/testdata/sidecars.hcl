# A service with an init task, a sidecar started before it and a poststart agent beside it.
service "web" {
  image = "registry.example.com/acme/web:1.4"
  port  = 8000

  # Runs to completion before the main task starts.
  sidecar "migrate" {
    image     = "registry.example.com/acme/web-migrate@sha256:0d9c2f2f5a8f0a7e2b7c9d0b1c3e8f4a6b2d1e0f9c8b7a6d5e4f3a2b1c0d9e8f"
    args      = ["--to", "latest"]
    lifecycle = "prestart"
    env = {
      DB = "postgres://db.service.consul/web"
    }
  }

  # The default lifecycle: started before the main task, runs beside it.
  sidecar "db-proxy" {
    command = "/usr/local/bin/cloud-sql-proxy"
    args    = ["--port", "5432", "acme:europe-west1:web"]
    resources {
      cpu        = 50
      memory     = 64
      memory_max = 128
    }
  }

  # Started once the main task has started.
  sidecar "log-agent" {
    image     = "registry.example.com/ops/vector:0.40"
    network   = "host"
    lifecycle = "poststart"
    env = {
      PORT = "9598"
    }
  }
}
