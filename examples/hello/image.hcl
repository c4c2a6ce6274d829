# examples/hello as a container image: the same service as service.hcl, run by Nomad's docker
# driver. `make dev-image` builds hello statically, pushes it to a registry on loopback
# (.dev-registry/) and applies this file with the pinned reference; by hand:
#   go run ./examples/image -app hello -registry 127.0.0.1:5000     # prints the reference
#   rouse apply -f examples/hello/image.hcl -var image=127.0.0.1:5000/hello@sha256:…
variable "image" {
  description = "The hello image, best pinned by digest (registry/hello@sha256:…)."
  type        = string
}

variable "target" {
  description = "Who to greet."
  type        = string
  default     = "rouse"
}

service "hello" {
  namespace = "default"
  image     = var.image
  # The port hello listens on inside its container: rouse sets $PORT to it and Nomad maps
  # a free port of the node to it.
  port = 8080
  env  = { TARGET = var.target }

  resources {
    cpu    = 100
    memory = 64
  }

  readiness { path = "/healthz" }

  autoscaling {
    min                 = 0
    max                 = 10
    scale_to_zero_grace = "30s"
  }
}
