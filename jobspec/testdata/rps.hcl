# Requests-per-second scaling, an explicit revision name, the exec driver and a TCP check.
service "api" {
  namespace     = "team-a"
  revision_name = "api-blue"
  command       = "/opt/api/bin/api"
  driver        = "exec"
  args          = ["serve", "--port", "${NOMAD_PORT_http}"]

  readiness {
    type = "tcp"
  }

  autoscaling {
    metric = "rps"
    min    = 1
  }

  traffic {
    revision = "api-blue"
    percent  = 100
  }
}
