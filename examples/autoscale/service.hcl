# examples/autoscale — Knative's autoscale demo: ten requests in flight per instance is the
# target, so `?sleep=100` at 300 rps (≈30 in flight) wants about 5 instances.
variable "bin" {
  description = "Absolute path of the folder holding the built autoscale binary."
  type        = string
}

service "autoscale" {
  namespace = "default"
  driver    = "raw_exec"
  command   = "${var.bin}/autoscale"

  resources {
    cpu    = 100
    memory = 128
  }

  readiness { path = "/healthz" }

  autoscaling {
    metric              = "concurrency"
    target              = 10
    min                 = 0
    max                 = 30
    scale_to_zero_grace = "30s"
  }
}
