# Every field, with a container image.
service "shop" {
  namespace     = "default"
  datacenters   = ["dc1", "dc2"]
  image         = "ghcr.io/acme/shop:1.2"
  args          = ["--log-level", "debug"]
  port          = 9000
  env = {
    TARGET    = "world"
    LOG_JSON  = true
    WORKERS   = 4
    HOSTNAME_ = "${attr.unique.hostname}"
  }
  concurrency = 10
  timeout     = "90s"

  resources {
    cpu        = 250
    memory     = 256
    memory_max = 512
  }

  readiness {
    path     = "/healthz"
    interval = "2s"
    timeout  = "1s"
  }

  constraint {
    attribute = "${node.class}"
    value     = "edge"
  }

  constraint {
    attribute = "${attr.kernel.name}"
    operator  = "regexp"
    value     = "^linux$"
  }

  constraint {
    operator = "distinct_hosts"
    value    = "true"
  }

  autoscaling {
    metric                        = "concurrency"
    target                        = 8
    target_utilization_percentage = 80
    min                           = 0
    max                           = 20
    initial                       = 2
    window                        = "60s"
    panic_window_percentage       = 10
    panic_threshold_percentage    = 200
    max_scale_up_rate             = 100
    max_scale_down_rate           = 4
    scale_to_zero_grace           = "45s"
    target_burst_capacity         = -1
  }

  traffic {
    revision = "shop-00001"
    percent  = 90
    tag      = "stable"
  }

  traffic {
    latest  = true
    percent = 10
    tag     = "canary"
  }
}
