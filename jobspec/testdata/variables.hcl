# test: -var tag=1.4.2
# test: env GREETING=Howdy
# Variables, locals and functions; -var and env() values come from the directives above.
variable "tag" {
  type = string
}

variable "replicas" {
  type    = number
  default = 2

  validation {
    condition     = var.replicas >= 1
    error_message = "At least one replica."
  }
}

variable "extra_args" {
  type    = list(string)
  default = ["-v"]
}

locals {
  name  = lower("Greeter")
  image = format("ghcr.io/acme/%s:%s", local.name, var.tag)
}

service "greeter" {
  image = local.image
  args  = concat(var.extra_args, ["--name", upper(local.name)])
  env = {
    GREETING = coalesce(env("GREETING"), "Hello")
    TARGETS  = join(",", split(" ", trimspace("  world moon  ")))
    MAXIMUM  = max(3, var.replicas)
  }

  autoscaling {
    min     = var.replicas
    initial = min(var.replicas, 1)
  }
}
