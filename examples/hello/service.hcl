# examples/hello — the smallest rouse service. `make dev` builds the binary into bin/ and
# applies this file; by hand: rouse apply -f examples/hello/service.hcl -var bin=$PWD/bin
variable "bin" {
  description = "Absolute path of the folder holding the built hello binary."
  type        = string
}

variable "target" {
  description = "Who to greet."
  type        = string
  default     = "rouse"
}

service "hello" {
  namespace = "default"
  driver    = "raw_exec"
  command   = "${var.bin}/hello"
  env       = { TARGET = var.target }

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
