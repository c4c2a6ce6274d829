# examples/autoscale as a container image: the same service as service.hcl, run by Nomad's
# docker driver. Build and push the image, then apply this file with its reference:
#   go run ./examples/image -app autoscale -registry 127.0.0.1:5000  # prints the reference
#   rouse apply -f examples/autoscale/image.hcl -var image=127.0.0.1:5000/autoscale@sha256:…
# (`go run ./examples/image dev -app autoscale` does both under `rouse dev`, as
# `make dev-image` does for hello.)
variable "image" {
  description = "The autoscale image, best pinned by digest (registry/autoscale@sha256:…)."
  type        = string
}

service "autoscale" {
  namespace = "default"
  image     = var.image
  # The port autoscale listens on inside its container ($PORT).
  port = 8080

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
